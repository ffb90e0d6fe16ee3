"""The exact Bayesian posterior of real finite-width networks, by importance sampling (book §6.4).

Conditioned on its last hidden layer a network's output is exactly Gaussian: z_{i;D} | Ĝ ~
N(0, Ĝ) per output i, with Ĝ = C_b + (C_W/n_{L−1}) σ(z^{(L−1)})ᵀσ(z^{(L−1)}) on all inputs D.
So a sampled network m contributes its exact conditional posterior — Gaussian conditioning of
the test outputs on the training targets with noise ε²:

    m_m = Ĝ_BA (Ĝ_AA + ε²)^{-1} y,    S_m = Ĝ_BB − Ĝ_BA (Ĝ_AA + ε²)^{-1} Ĝ_AB,

weighted by its exact marginal likelihood w_m = Π_i N(y_i; 0, Ĝ_AA + ε²). The posterior is the
w-weighted mixture: mean Σ w m / Σ w, covariance Σ w (δ_ik S + m mᵀ)/Σ w − mean meanᵀ, evidence
p(y) = E[w], and E[Ĝ^{(ℓ)} | y] = Σ w Ĝ^{(ℓ)} / Σ w for every layer ℓ (Ĝ^{(ℓ)} from layer
ℓ−1's activations). Only the integral over Ĝ is Monte Carlo — the integral over the output layer
is done exactly — so the estimator's variance comes from the spread of w alone.

Error bars are delete-one-group jackknife over :data:`GROUPS` groups of networks (network m in
group m mod G), which handles every ratio of weighted sums alike; the effective sample size
(Σw)²/Σw² says how many networks the weights leave.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from pdlt.experiment.ensemble import (
    DEFAULT_MAX_MEMORY,
    check_ensemble_args,
    forward_chunks,
    progress_bar,
    progress_enabled,
    resolve_device,
    resolve_dtype,
)
from pdlt.experiment.measure import Measurement
from pdlt.network import MLP

Tensor = torch.Tensor

GROUPS = 32  # jackknife groups
MIN_ESS = 30.0  # below: refuse (the estimate is a handful of networks)
WARN_ESS = 300.0  # below: warn (error bars from few effective networks are themselves rough)


@dataclass(frozen=True, eq=False, repr=False)
class PosteriorMeasurement(Measurement):
    """The exact posterior of an ensemble of real networks (importance-weighted, see module).

    Statistics (each with ``_err``, comparable with :func:`pdlt.bayesian_posterior` by
    :func:`pdlt.compare`): ``mean`` (N_B, n_L), ``cov`` (N_B, n_L, N_B, n_L), ``shift``
    (L, N, N) = E[Ĝ^{(ℓ)} | y] − E[Ĝ^{(ℓ)}] on D = train ∪ test, ``log_evidence`` (1,).

    Attributes
    ----------
    ess:
        Effective sample size (Σw)²/Σw² of the importance weights.
    n_train:
        N_A (the first N_A rows of ``x`` are the training inputs).
    """

    ess: float = 0.0
    n_train: int = 0

    @property
    def representation_shift(self) -> dict[int, np.ndarray]:
        """{ℓ: E[Ĝ^{(ℓ)} | y] − E[Ĝ^{(ℓ)}]}, ℓ = 1…L, each (N, N) on D = train ∪ test."""
        s = self.values["shift"]
        return {ell + 1: s[ell] for ell in range(s.shape[0])}

    @property
    def representation_shift_err(self) -> dict[int, np.ndarray]:
        s = self.errors["shift"]
        return {ell + 1: s[ell] for ell in range(s.shape[0])}

    def __repr__(self) -> str:
        return (
            f"PosteriorMeasurement(n_networks={self.n_networks}, ess={self.ess:.1f}, "
            f"train={self.n_train}, test={self.values['mean'].shape[0]}, seed={self.seed})"
        )


def network_posteriors(
    G: Tensor, n_A: int, Y: Tensor, noise: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Per network: log w (B,), conditional mean (B, N_B, n_L) and covariance (B, N_B, N_B) of
    the test outputs given the training targets, for metrics G (B, N, N) (float64)."""
    n_L = Y.shape[1]
    G_AA = G[:, :n_A, :n_A] + noise * torch.eye(n_A, dtype=G.dtype, device=G.device)
    chol, info = torch.linalg.cholesky_ex(G_AA)
    if bool((info > 0).any()):
        raise FloatingPointError(
            "a sampled network's training metric Ĝ_AA + ε² is not positive definite; "
            "increase the noise"
        )
    alpha = torch.cholesky_solve(Y.expand(G.shape[0], -1, -1), chol)  # (Ĝ_AA + ε²)^{-1} y
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(dim=1)
    logw = -0.5 * (Y * alpha).sum(dim=(1, 2)) - 0.5 * n_L * (logdet + n_A * math.log(2 * math.pi))
    G_BA = G[:, n_A:, :n_A]
    mean = G_BA @ alpha
    half = torch.linalg.solve_triangular(chol, G_BA.transpose(1, 2), upper=False)
    S = G[:, n_A:, n_A:] - half.transpose(1, 2) @ half
    return logw, mean, S


def layer_metrics(net: MLP, z: tuple[Tensor, ...], gram: Tensor) -> Tensor:
    """Ĝ^{(ℓ)} = C_b + (C_W/n_{ℓ−1}) σ(z^{(ℓ−1)})ᵀσ(z^{(ℓ−1)}) for ℓ = 1…L per network,
    (B, L, N, N) float64 (ℓ = 1 from the inputs' Gram matrix, the same for every network)."""
    B = z[0].shape[0]
    out = [(net.C_b[0] + net.C_W[0] * gram).expand(B, -1, -1)]
    for ell in range(1, net.depth):
        s = net.activation(z[ell - 1].to(torch.float64))
        out.append(net.C_b[ell] + net.C_W[ell] / s.shape[1] * (s.transpose(1, 2) @ s))
    return torch.stack(out, dim=1)


class _GroupSums:
    """Per-group sums of w·feature (and of the unweighted metrics), with w = exp(log w − ref)
    rescaled whenever a larger log w arrives (no overflow, no underflow of the best networks)."""

    def __init__(self, groups: int, shapes: dict[str, tuple[int, ...]]) -> None:
        self.G = groups
        self.ref = -math.inf
        self.count = torch.zeros(groups, dtype=torch.float64)
        self.w = torch.zeros(groups, dtype=torch.float64)
        self.w2 = torch.zeros(groups, dtype=torch.float64)
        self.wf = {k: torch.zeros((groups, *s), dtype=torch.float64) for k, s in shapes.items()}
        self.prior = torch.zeros((groups, *shapes["metric"]), dtype=torch.float64)

    def update(self, group: Tensor, logw: Tensor, features: dict[str, Tensor]) -> None:
        top = float(logw.max())
        if top > self.ref:
            scale = math.exp(self.ref - top) if math.isfinite(self.ref) else 0.0
            self.w *= scale
            self.w2 *= scale**2
            for v in self.wf.values():
                v *= scale
            self.ref = top
        w = torch.exp(logw - self.ref)
        self.count.index_add_(0, group, torch.ones_like(w))
        self.w.index_add_(0, group, w)
        self.w2.index_add_(0, group, w**2)
        for k, f in features.items():
            self.wf[k].index_add_(0, group, w.reshape(-1, *[1] * (f.ndim - 1)) * f)
        self.prior.index_add_(0, group, features["metric"])


def _estimates(count, w, wf: dict[str, Tensor], prior, ref: float) -> dict[str, np.ndarray]:
    """The posterior statistics from (total or leave-one-group-out) sums."""
    mean = wf["mean"] / w
    second = wf["second"] / w
    B, n_L = mean.shape
    cov = second - torch.einsum("bi,ck->bick", mean, mean)
    shift = wf["metric"] / w - prior / count
    log_ev = torch.log(w / count) + ref
    return {
        "mean": mean.numpy(),
        "cov": (0.5 * (cov + cov.permute(2, 3, 0, 1))).numpy(),
        "shift": shift.numpy(),
        "log_evidence": log_ev.reshape(1).numpy(),
    }


def measure_posterior(
    net: MLP,
    X: np.ndarray | Tensor,
    Y: np.ndarray | Tensor,
    X_test: np.ndarray | Tensor,
    *,
    noise: float,
    n_networks: int = 20000,
    seed: int = 0,
    min_ess: float = MIN_ESS,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool | None = None,
) -> PosteriorMeasurement:
    """The exact Bayesian posterior of ``n_networks`` sampled networks of ``net`` (book §6.4).

    Each network contributes its exact Gaussian posterior given its last hidden layer, weighted
    by its exact likelihood (module docstring). Comparable with :func:`pdlt.bayesian_posterior`
    (the O(1/n) theory) and its ``gp_*`` fields (infinite width) by :func:`pdlt.compare`.

    Parameters
    ----------
    net:
        The network spec (widths, C_b, C_W; ``output_dim`` = n_L, the columns of Y).
    X, Y:
        Training inputs (N_A, n_0) and targets (N_A, n_L).
    X_test:
        Test inputs (N_B, n_0).
    noise:
        ε² > 0, the likelihood's variance (needed: it keeps Ĝ_AA + ε² invertible for every
        network).
    n_networks, seed:
        Ensemble size and seed (the networks are those of :func:`pdlt.measure` with that seed).
    min_ess:
        Refuse (ValueError) when the effective sample size falls below this; warn below 300.
    dtype, device, max_memory, progress:
        As in :func:`pdlt.measure`.

    Returns
    -------
    PosteriorMeasurement
        ``.mean``, ``.mean_err``, ``.cov``, ``.shift``, ``.log_evidence``, ``.ess``,
        ``.representation_shift`` (layer → (N, N)).

    Examples
    --------
    >>> post = pdlt.measure_posterior(net, X, Y, X_test, noise=1e-2, n_networks=50000, seed=0)
    >>> post.ess, post.mean, post.mean_err
    """
    from pdlt import _validation
    from pdlt.theory.bayes import validate_bayes_inputs

    xa, Ya, xb, noise = validate_bayes_inputs(net, X, Y, X_test, noise)
    check_ensemble_args(n_networks, seed, max_memory)
    min_ess = _validation.positive("min_ess", min_ess)
    dt, dev = resolve_dtype(dtype), resolve_device(device)
    x = torch.cat([xa, xb])
    n_A, n_B, N, n_L = xa.shape[0], xb.shape[0], x.shape[0], Ya.shape[1]
    gram = (x @ x.T) / x.shape[1]
    Yt = torch.from_numpy(Ya)
    groups = min(GROUPS, int(n_networks))
    sums = _GroupSums(
        groups,
        {"mean": (n_B, n_L), "second": (n_B, n_L, n_B, n_L), "metric": (net.depth, N, N)},
    )
    eye = torch.eye(n_L, dtype=torch.float64)
    with progress_bar("sampling networks", n_networks, progress_enabled(progress)) as advance:
        for chunk in forward_chunks(
            net, x, n_networks, seed, dtype=dt, device=dev, max_memory=max_memory
        ):
            metrics = layer_metrics(net, tuple(z.cpu() for z in chunk.z), gram)
            logw, mean, S = network_posteriors(metrics[:, -1], n_A, Yt, noise)
            if not torch.isfinite(logw).all():
                raise FloatingPointError(
                    "a sampled network's likelihood is not finite: the networks overflowed; "
                    "use dtype='float64', a smaller C_W or fewer layers"
                )
            second = torch.einsum("mbc,ik->mbick", S, eye) + torch.einsum(
                "mbi,mck->mbick", mean, mean
            )
            group = (torch.arange(chunk.size) + chunk.start) % groups
            sums.update(group, logw, {"mean": mean, "second": second, "metric": metrics})
            advance(chunk.size)
    ess = float(sums.w.sum() ** 2 / sums.w2.sum())
    if ess < min_ess:
        raise ValueError(
            f"the importance weights leave an effective sample size of {ess:.1f} < min_ess = "
            f"{min_ess:g} out of {n_networks} networks: the posterior is too far from the prior "
            "for this ensemble. Use more networks, wider networks, more noise or fewer targets"
        )
    if ess < WARN_ESS:
        warnings.warn(
            f"effective sample size {ess:.1f} of {n_networks} networks: error bars are rough",
            RuntimeWarning,
            stacklevel=2,
        )
    total = {k: v.sum(0) for k, v in sums.wf.items()}
    values = _estimates(sums.count.sum(), sums.w.sum(), total, sums.prior.sum(0), sums.ref)
    # delete-one-group jackknife
    loo = [
        _estimates(
            sums.count.sum() - sums.count[g],
            sums.w.sum() - sums.w[g],
            {k: total[k] - v[g] for k, v in sums.wf.items()},
            sums.prior.sum(0) - sums.prior[g],
            sums.ref,
        )
        for g in range(groups)
    ]
    errors = {}
    for k in values:
        stack = np.stack([e[k] for e in loo])
        errors[k] = np.sqrt((groups - 1) / groups * ((stack - stack.mean(0)) ** 2).sum(0))
    for k, v in values.items():
        if not (np.isfinite(v).all() and np.isfinite(errors[k]).all()):
            raise FloatingPointError(f"measured {k} is not finite; use dtype='float64'")
    return PosteriorMeasurement(
        values=values,
        errors=errors,
        n_networks=int(n_networks),
        seed=int(seed),
        dtype=str(dt).removeprefix("torch."),
        device=str(dev),
        net=net,
        x=x.numpy(),
        ess=ess,
        n_train=n_A,
    )
