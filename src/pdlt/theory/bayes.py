"""Bayesian inference at finite width: the O(1/n) posterior, wiring, the O(1/n) evidence and
representation learning without gradients (book §6.4: eqs. 6.79, 6.81–6.82, 6.87–6.89, 6.90–6.92).

At width n the prior over the network's outputs is a mixture of Gaussians: given the last hidden
layer, z_{i;D} ~ N(0, Ĝ) independently for each output i, with the stochastic metric
Ĝ ≡ Ĝ^{(L)} = C_b + (C_W/n_{L−1}) Σ_j σ(z^{(L−1)}_j)σ(z^{(L−1)}_j). Its mean is the metric
G = K + K^{{1}}/n_{L−1} and its fluctuation Δ = Ĝ − G has E[Δ_{ab}Δ_{cd}] = V_{(ab)(cd)}/n_{L−1}
(§4.3: V *is* n·Cov[Ĝ, Ĝ]); higher cumulants are O(1/n²). Bayes' rule with a Gaussian
likelihood of variance ε² on the training block A weights each Ĝ by its exact evidence
w(Ĝ) = Π_i N(y_i; 0, Ĝ_AA + ε²), so for any function f of Ĝ (Taylor to second order in Δ,
pdlt's derivation; the book's §6.4 route through the action Q(w), eq. 6.86, gives the mean):

    E[f | y] = f(G) + (1/2n) V:∂∂f + (1/n) V:(∂log w ⊗ ∂f) + O(1/n²).                  (∗)

Notation (training A, test B, all evaluated at G): M = (G̃ + ε²)^{-1}, T = G_BA M, ỹ_i = M y_i,
R = Σ_j ỹ_j ỹ_jᵀ − n_L M (A×A), and the *subtracting projector* P = [−T, 1_B] (B×D), which
maps a fluctuation to its part that the training data cannot explain (PΔ vanishes on training
rows at ε → 0; the book's V̂). With V^P_{β a b c} = Σ_x P_{βx} V_{(xa)(bc)} and
W_{β1 a β2 c} = Σ_{xy} P_{β1x}P_{β2y} V_{(xa)(yc)}, V̄_{β1β2 bc} = Σ_{xy} P_{β1x}P_{β2y} V_{(xy)(bc)}:

* posterior mean (eq. 6.87–6.88; f = Ĝ_BA M̂ y_i):
      m_{i;β} = T y_i + (1/n)[½ V^P_{βabc} ỹ_{i;a} R_{bc} − V^P_{βabc} M_{ab} ỹ_{i;c}].
  The R term carries Σ_j ỹ_jỹ_j: the prediction for output i depends on the targets of every
  output j (wiring, eq. 6.89).
* posterior covariance (derived here; the book numbers only the naive one, eq. 6.82): the
  mixture's covariance is E[δ_ik S(Ĝ) | y] + Cov[m_i(Ĝ), m_k(Ĝ) | y], S = Ĝ_BB − Ĝ_BA M̂ Ĝ_AB:
      Cov[z_{i;β1}, z_{k;β2} | y] = δ_ik {S(G) + (1/n)[½ V̄_{β1β2bc} R_{bc} − W_{β1aβ2c} M_{ac}]}
                                   + (1/n) W_{β1aβ2c} ỹ_{i;a} ỹ_{k;c}.
  The last term couples different outputs: posterior outputs are correlated (wiring again).
* evidence (log E[w], cf. §6.3.2 at infinite width):
      log p(y) = log w(G) + (1/n)[−½ Σ_i ỹ_iᵀ V_{(a b)(c d)} M_{bc} ỹ_{i;d}
                 + (n_L/4) M_{ab}M_{cd}V_{(bc)(da)} + ⅛ R_{ab}R_{cd}V_{(ab)(cd)}].
* representation shift (§6.4.3, "fire together, wire together", eqs. 6.90–6.92; f = Ĝ^{(ℓ)}):
      E[Ĝ^{(ℓ)}_{δ1δ2} | y] − G^{(ℓ)}_{δ1δ2} = (1/2n_{ℓ−1}) Σ_{ab∈A} V^{(ℓ,L)}_{(δ1δ2)(ab)} R_{ab},
  with the inter-layer vertex V^{(ℓ,L)} = n_{ℓ−1} Cov[Ĝ^{(ℓ)}, Ĝ^{(L)}] (V^{(L,L)} = V^{(L)}):
  the metric moves toward the observed output correlations ỹỹᵀ and away from the prior's M.

The inter-layer vertex obeys a new recursion, :data:`CROSS_VERTEX` (pdlt's derivation): since
E[Ĝ^{(m+1)} | layers ≤ m−1] = F(Ĝ^{(m)}) exactly (F the kernel map) and Ĝ^{(ℓ)} is fixed by the
layers below ℓ ≤ m, Cov[Ĝ^{(ℓ)}, Ĝ^{(m+1)}] = Cov[Ĝ^{(ℓ)}, F(Ĝ^{(m)})] = Cov[Ĝ^{(ℓ)}, Ĝ^{(m)}] Jᵀ
+ O(1/n²), so

      V^{(ℓ,m+1)} = V^{(ℓ,m)} J^{(m)ᵀ},    V^{(ℓ,ℓ)} = V^{(ℓ)},

with J^{(m)} the kernel map's Jacobian in the pair variables (:func:`~pdlt.theory.vertex.
kernel_jacobian`). It is one more step of the single layer walk.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg
import torch

from pdlt.gaussian import LayerMoments
from pdlt.network import MLP, require_plain
from pdlt.theory.layers import LayerState, Recursion, gram, propagate
from pdlt.theory.vertex import CORRECTION, VERTEX, kernel_jacobian, pairs_to_tensor

Tensor = torch.Tensor
_DTYPE = torch.float64

# The expansion is in V/(n K²); past this relative size of the O(1/n) terms it means little.
BREAKDOWN = 0.5


# --------------------------------------------------------------------------------------------
# the inter-layer vertex: one more recursion of the layer walk


def cross_vertex_step(net: MLP, layer: int, prev: LayerState, m: LayerMoments) -> dict[str, Tensor]:
    """V^{(ℓ,m+1)} = V^{(ℓ,m)} J^{(m)ᵀ} for every ℓ < m+1, with V^{(m,m)} = V^{(m)} (module
    docstring). Stored as ``V_cross`` (L, P, P): row ℓ−1 at layer m is n_{ℓ−1}·Cov[Ĝ^{(ℓ)}_p,
    Ĝ^{(m)}_q] for ℓ < m, zero for ℓ ≥ m (the diagonal block is V^{(m)} itself)."""
    J = kernel_jacobian(m.derivatives, net.C_W[layer - 1])
    out = prev.V_cross @ J.T
    out[prev.layer - 1] = prev.V @ J.T
    return {"V_cross": out}


def _zeros_cross(net: MLP, g: Tensor) -> dict[str, Tensor]:
    P = g.shape[0] * (g.shape[0] + 1) // 2
    return {"V_cross": torch.zeros((net.depth, P, P), dtype=_DTYPE)}


CROSS_VERTEX = Recursion(
    "cross_vertex", first=_zeros_cross, step=cross_vertex_step, requires=(VERTEX,)
)


@dataclass(frozen=True)
class PriorStatistics:
    """What the O(1/n) posterior needs from the prior, on D = A ∪ B (float64 numpy).

    Attributes
    ----------
    K, K1:
        Output-layer kernel K^{(L)} and its 1/n correction K^{{1}(L)} (N, N).
    V:
        Output-layer four-point vertex V^{(L)} as a full tensor (N, N, N, N).
    V_cross:
        ``V_cross[ℓ-1]`` = V^{(ℓ,L)} = n_{ℓ−1}Cov[Ĝ^{(ℓ)}, Ĝ^{(L)}] as (N, N, N, N) for ℓ < L;
        ``V_cross[L-1]`` = V^{(L)}. (L, N, N, N, N).
    widths:
        n_{ℓ−1} for ℓ = 1…L (the width that sets layer ℓ's 1/n).
    """

    K: np.ndarray
    K1: np.ndarray
    V: np.ndarray
    V_cross: np.ndarray
    widths: np.ndarray


def prior_statistics(net: MLP, x: Tensor, *, tol: float = 1e-7) -> PriorStatistics:
    """K^{(L)}, K^{{1}(L)}, V^{(L)} and the inter-layer vertices V^{(ℓ,L)} on the inputs x (one
    layer walk running CORRECTION and :data:`CROSS_VERTEX`)."""
    require_plain(net, "the finite-width Bayesian posterior")
    walk = propagate(net, gram(x), [CORRECTION, CROSS_VERTEX], tol=tol)
    last = walk.states[-1]
    N = x.shape[0]
    cross = last.V_cross.clone()
    cross[-1] = last.V
    return PriorStatistics(
        K=last.K.numpy(),
        K1=last.K1.numpy(),
        V=pairs_to_tensor(last.V, N).numpy(),
        V_cross=pairs_to_tensor(cross, N).numpy(),
        widths=np.asarray(net.widths[:-1], dtype=float),
    )


# --------------------------------------------------------------------------------------------
# the equations


@dataclass(frozen=True)
class _Conditioning:
    """Gaussian conditioning on the training block at the metric G (all float64 numpy)."""

    M: np.ndarray  # (G̃ + ε²)^{-1}, (N_A, N_A)
    T: np.ndarray  # G_BA M, (N_B, N_A)
    P: np.ndarray  # [−T, 1_B], (N_B, N)
    y_up: np.ndarray  # ỹ = M y, (N_A, n_L)
    R: np.ndarray  # Σ_j ỹ_jỹ_jᵀ − n_L M, (N_A, N_A)
    chol: np.ndarray  # lower Cholesky factor of G̃ + ε²


def _condition(G: np.ndarray, n_A: int, Y: np.ndarray, noise: float) -> _Conditioning:
    from pdlt.theory.learning import cholesky_with_jitter

    N = G.shape[0]
    chol, _ = cholesky_with_jitter(
        G[:n_A, :n_A] + noise * np.eye(n_A), "the training metric G̃ + ε²"
    )
    M = scipy.linalg.cho_solve((chol, True), np.eye(n_A))
    M = 0.5 * (M + M.T)
    T = G[n_A:, :n_A] @ M
    P = np.concatenate([-T, np.eye(N - n_A)], axis=1)
    y_up = M @ Y
    R = y_up @ y_up.T - Y.shape[1] * M
    return _Conditioning(M=M, T=T, P=P, y_up=y_up, R=R, chol=chol)


def gaussian_log_evidence(c: _Conditioning, Y: np.ndarray) -> float:
    """log N(y; 0, G̃ + ε²) summed over outputs (book §6.3.2)."""
    n_A, n_L = Y.shape
    logdet = 2.0 * float(np.sum(np.log(np.diag(c.chol))))
    return -0.5 * float(np.sum(Y * c.y_up)) - 0.5 * n_L * (logdet + n_A * math.log(2 * math.pi))


def posterior_mean(
    c: _Conditioning, Y: np.ndarray, V: np.ndarray, n: float, n_A: int
) -> tuple[np.ndarray, np.ndarray]:
    """(T y, its O(1/n) correction): the posterior mean m_{i;β} (book eqs. 6.87–6.88; module
    docstring). ``V`` is V^{(L)} (N, N, N, N), ``n`` = n_{L−1}."""
    A = slice(0, n_A)
    VP = np.einsum("bx,xacd->bacd", c.P, V[:, A, A, A])
    corr = 0.5 * np.einsum("bacd,ai,cd->bi", VP, c.y_up, c.R) - np.einsum(
        "bacd,ac,di->bi", VP, c.M, c.y_up
    )
    return c.T @ Y, corr / n


def posterior_covariance(
    c: _Conditioning, G: np.ndarray, V: np.ndarray, n: float, n_A: int, n_L: int
) -> tuple[np.ndarray, np.ndarray]:
    """(S(G), O(1/n) correction) of the joint posterior covariance Cov[z_{i;β1}, z_{k;β2} | y],
    both (N_B, n_L, N_B, n_L) (pdlt's derivation; module docstring). The zeroth order is the
    naive covariance δ_ik[G_BB − G_BA M G_AB] (eq. 6.82 at the metric G)."""
    A = slice(0, n_A)
    S0 = G[n_A:, n_A:] - c.T @ G[:n_A, n_A:]
    S0 = 0.5 * (S0 + S0.T)
    W = np.einsum("bx,cy,xayd->bacd", c.P, c.P, V[:, A, :, A])  # (B, A, B, A)
    Vbar = np.einsum("bx,cy,xyad->bcad", c.P, c.P, V[:, :, A, A])  # (B, B, A, A)
    diag = 0.5 * np.einsum("bcad,ad->bc", Vbar, c.R) - np.einsum("bacd,ad->bc", W, c.M)
    wiring = np.einsum("bacd,ai,dk->bick", W, c.y_up, c.y_up)
    eye = np.eye(n_L)
    zeroth = np.einsum("bc,ik->bick", S0, eye)
    first = (np.einsum("bc,ik->bick", diag, eye) + wiring) / n
    sym = lambda t: 0.5 * (t + t.transpose(2, 3, 0, 1))  # noqa: E731
    return sym(zeroth), sym(first)


def log_evidence_correction(c: _Conditioning, V: np.ndarray, n: float, n_A: int) -> float:
    """The O(1/n) term of log p(y | H) (module docstring): ⟨exp(δ log w)⟩ to second order in Δ."""
    A = slice(0, n_A)
    VA = V[A, A, A, A]
    n_L = c.y_up.shape[1]
    fit = -0.5 * np.einsum("abcd,ai,bc,di->", VA, c.y_up, c.M, c.y_up)
    volume = 0.25 * n_L * np.einsum("ab,cd,bcda->", c.M, c.M, VA)
    spread = 0.125 * np.einsum("ab,cd,abcd->", c.R, c.R, VA)
    return float(fit + volume + spread) / n


def representation_shift(c: _Conditioning, V_cross: np.ndarray, n_A: int) -> np.ndarray:
    """E[Ĝ^{(ℓ)} | y] − G^{(ℓ)} for every layer (book §6.4.3, eqs. 6.90–6.92), from
    V^{(ℓ,L)}/n_{ℓ−1}: ``V_cross`` (L, N, N, N, N) already divided by n_{ℓ−1}. (L, N, N)."""
    A = slice(0, n_A)
    return 0.5 * np.einsum("lxyab,ab->lxy", V_cross[:, :, :, A, A], c.R)


# --------------------------------------------------------------------------------------------
# the result


@dataclass(frozen=True, eq=False)
class BayesianPosterior:
    """The posterior of a finite-width network through O(1/n) (book §6.4).

    Attributes
    ----------
    mean:
        Posterior mean of the test outputs (N_B, n_L), GP part plus 1/n part.
    cov:
        Joint posterior covariance Cov[z_{i;β1}, z_{k;β2} | y], (N_B, n_L, N_B, n_L).
    shift:
        Representation shift E[Ĝ^{(ℓ)} | y] − G^{(ℓ)} on all inputs D = A ∪ B, (L, N, N);
        ℓ = 1 is zero (the first layer's metric is deterministic). Also as the dict
        :attr:`representation_shift`.
    log_evidence:
        log p(y_A | H) through O(1/n), shape (1,).
    gp_mean, gp_cov, gp_log_evidence:
        The infinite-width (NNGP, kernel K^{(L)}) posterior and evidence, for comparison.
    mean_1, cov_1, log_evidence_1:
        The O(1/n) parts alone (what K^{{1}} and V add); mean = T_G y + mean_1 with T_G at G.
    net, x, n_train:
        The network, the inputs D = train ∪ test (N, n_0) and N_A.
    """

    mean: np.ndarray
    cov: np.ndarray
    shift: np.ndarray
    log_evidence: np.ndarray
    gp_mean: np.ndarray
    gp_cov: np.ndarray
    gp_log_evidence: float
    mean_1: np.ndarray
    cov_1: np.ndarray
    log_evidence_1: float
    net: MLP
    x: np.ndarray
    n_train: int

    statistics = ("mean", "cov", "shift", "log_evidence")

    @property
    def representation_shift(self) -> dict[int, np.ndarray]:
        """{ℓ: E[Ĝ^{(ℓ)} | y] − G^{(ℓ)}} for ℓ = 1…L, each (N, N) on D = A ∪ B."""
        return {ell + 1: self.shift[ell] for ell in range(self.shift.shape[0])}

    @property
    def std(self) -> np.ndarray:
        """Posterior standard deviation of each test output (N_B, n_L)."""
        B, n_L = self.mean.shape
        var = self.cov.reshape(B * n_L, B * n_L).diagonal().reshape(B, n_L)
        return np.sqrt(np.maximum(var, 0.0))

    def to_frame(self) -> pd.DataFrame:
        """One row per test input and output: GP mean, 1/n mean, std."""
        B, n_L = self.mean.shape
        return pd.DataFrame(
            {
                "test_input": np.repeat(np.arange(B), n_L),
                "output": np.tile(np.arange(n_L), B),
                "gp_mean": self.gp_mean.reshape(-1),
                "mean": self.mean.reshape(-1),
                "std": self.std.reshape(-1),
            }
        )

    def __repr__(self) -> str:
        B, n_L = self.mean.shape
        return (
            f"BayesianPosterior(train={self.n_train}, test={B}, outputs={n_L}, "
            f"log_evidence={float(self.log_evidence[0]):.6g}, n={self.net.widths[-2]})"
        )


def _check_expansion(scale: float, first: np.ndarray, what: str, net: MLP) -> None:
    """Warn when the O(1/n) part is not small beside the scale of the leading part (the
    targets for the mean, the prior variance for the covariance)."""
    size = float(np.max(np.abs(first), initial=0.0))
    if scale > 0 and size > BREAKDOWN * scale:
        warnings.warn(
            f"the O(1/n) correction to the posterior {what} is {size / scale:.2g} × its scale "
            f"at hidden widths {net.widths[1:-1]}: too narrow for the 1/n expansion to be "
            "trusted (widen the network, use fewer layers or fewer training points)",
            RuntimeWarning,
            stacklevel=3,
        )


def finite_width_posterior(
    net: MLP,
    x_train: Tensor,
    Y: np.ndarray,
    x_test: Tensor,
    noise: float,
    *,
    tol: float = 1e-7,
) -> BayesianPosterior:
    """The O(1/n) posterior (inputs already validated: float64 tensors, Y (N_A, n_L) float64,
    noise > 0). See :func:`bayesian_posterior`."""
    from pdlt.theory.learning import log_evidence_from_kernel, nngp_posterior

    x = torch.cat([x_train, x_test])
    n_A, n_L = Y.shape
    stats = prior_statistics(net, x, tol=tol)
    n = float(stats.widths[-1])
    G = stats.K + stats.K1 / n
    c = _condition(G, n_A, Y, noise)
    mean_0, mean_1 = posterior_mean(c, Y, stats.V, n, n_A)
    cov_0, cov_1 = posterior_covariance(c, G, stats.V, n, n_A, n_L)
    ev_0 = gaussian_log_evidence(c, Y)
    ev_1 = log_evidence_correction(c, stats.V, n, n_A)
    cross = stats.V_cross / stats.widths[:, None, None, None, None]
    shift = representation_shift(c, cross, n_A)
    K = stats.K
    gp_mean, gp_S = nngp_posterior(K[:n_A, :n_A], K[n_A:, :n_A], K[n_A:, n_A:], Y, noise)
    gp_cov = np.einsum("bc,ik->bick", gp_S, np.eye(n_L))
    _check_expansion(float(np.abs(Y).max()), mean_1, "mean", net)
    _check_expansion(float(np.diag(G)[n_A:].max(initial=0.0)), cov_1, "covariance", net)
    return BayesianPosterior(
        mean=mean_0 + mean_1,
        cov=cov_0 + cov_1,
        shift=shift,
        log_evidence=np.array([ev_0 + ev_1]),
        gp_mean=gp_mean,
        gp_cov=gp_cov,
        gp_log_evidence=log_evidence_from_kernel(K[:n_A, :n_A], Y, noise),
        mean_1=mean_1,
        cov_1=cov_1,
        log_evidence_1=ev_1,
        net=net,
        x=x.numpy(),
        n_train=n_A,
    )


def validate_bayes_inputs(
    net: MLP, X: object, Y: object, X_test: object, noise: object
) -> tuple[Tensor, np.ndarray, Tensor, float]:
    """The shared boundary of :func:`bayesian_posterior` and :func:`pdlt.measure_posterior`:
    X (N_A, n_0), Y (N_A, n_L) with n_L the network's output_dim (a 1-d Y for n_L = 1),
    X_test (N_B, n_0), noise ε² > 0."""
    from pdlt import _validation
    from pdlt.network import validate_inputs

    if not isinstance(net, MLP):
        raise TypeError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    if net.depth < 2:
        raise ValueError(
            "finite-width Bayesian inference needs a hidden layer (depth ≥ 2): a depth-1 "
            "network is exactly Gaussian"
        )
    noise = _validation.positive("noise", noise)
    xa = validate_inputs(net, X)
    xb = validate_inputs(net, X_test)
    Ya = np.asarray(Y.detach().cpu().numpy() if isinstance(Y, Tensor) else Y)
    if Ya.dtype.kind not in "iuf":
        raise TypeError(f"Y must be a real numeric array, got dtype {Ya.dtype}")
    Ya = Ya.astype(np.float64)
    if Ya.ndim == 1:
        Ya = Ya[:, None]
    n_L = net.output_dim
    if Ya.ndim != 2 or Ya.shape != (xa.shape[0], n_L):
        raise ValueError(
            f"Y must have shape (N_A, n_L) = ({xa.shape[0]}, {n_L}) (one row per training input, "
            f"one column per network output; output_dim = {n_L}), got {np.shape(Y)}"
        )
    if not np.all(np.isfinite(Ya)):
        raise ValueError("Y contains NaN or inf; targets must be finite")
    return xa, Ya, xb, noise


def bayesian_posterior(
    net: MLP,
    X: np.ndarray | Tensor,
    Y: np.ndarray | Tensor,
    X_test: np.ndarray | Tensor,
    *,
    noise: float,
    tol: float = 1e-7,
) -> BayesianPosterior:
    """The Bayesian posterior of the finite-width network ``net`` through O(1/n) (book §6.4).

    Mean (eqs. 6.87–6.88, with wiring, eq. 6.89), joint covariance over test inputs and outputs
    (pdlt's derivation), evidence, and the representation shift of every layer (§6.4.3), at the
    network's widths. See the module docstring for the formulas.

    Parameters
    ----------
    net:
        The network; its widths set n, its ``output_dim`` the number of outputs n_L.
    X, Y:
        Training inputs (N_A, n_0) and targets (N_A, n_L).
    X_test:
        Test inputs (N_B, n_0).
    noise:
        ε² > 0, the variance of the Gaussian likelihood.

    Returns
    -------
    BayesianPosterior
        Comparable with :func:`pdlt.measure_posterior` by :func:`pdlt.compare`.

    Examples
    --------
    >>> net = pdlt.MLP("relu", depth=3, width=64, input_dim=3, output_dim=2, C_W=2.0)
    >>> post = pdlt.bayesian_posterior(net, X, Y, X_test, noise=1e-2)
    >>> post.mean - post.gp_mean           # the O(1/n) effect, wiring included
    """
    xa, Ya, xb, noise = validate_bayes_inputs(net, X, Y, X_test, noise)
    return finite_width_posterior(net, xa, Ya, xb, noise, tol=tol)


__all__ = [
    "CROSS_VERTEX",
    "BayesianPosterior",
    "bayesian_posterior",
    "finite_width_posterior",
    "prior_statistics",
]


def finite_width_evidence(net: MLP, x_train: Tensor, Y: np.ndarray, noise: float) -> float:
    """log p(y_A | H) through O(1/n) (module docstring); needs the training inputs only."""
    stats = prior_statistics(net, x_train)
    n = float(stats.widths[-1])
    c = _condition(stats.K + stats.K1 / n, Y.shape[0], Y, noise)
    return gaussian_log_evidence(c, Y) + log_evidence_correction(c, stats.V, n, Y.shape[0])


def evidence_from_statistics(
    stats: PriorStatistics, Y: np.ndarray, noise: float, n: float
) -> tuple[float, float]:
    """(log p(y) through O(1/n), log p(y) at infinite width) from training-set statistics at
    hidden width ``n`` (uniform widths: K^{{1}} and V do not depend on n, so one walk serves
    every width)."""
    c = _condition(stats.K + stats.K1 / n, Y.shape[0], Y, noise)
    c0 = _condition(stats.K, Y.shape[0], Y, noise)
    fw = gaussian_log_evidence(c, Y) + log_evidence_correction(c, stats.V, n, Y.shape[0])
    return fw, gaussian_log_evidence(c0, Y)
