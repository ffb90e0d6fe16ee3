"""Training ensembles of real MLPs by full-batch gradient descent (book ch. 7).

M networks of one spec are trained together as one batched torch program: the parameters of a
chunk of B networks are (B, n_ℓ, n_{ℓ−1}) tensors per layer and each step is a batched
forward/backward pass. The update is the book's gradient descent with the diagonal learning-rate
tensor of §7.1 / §8.0,

    b^{(ℓ)}  ← b^{(ℓ)}  − η λ_b^{(ℓ)} ∂L_A/∂b^{(ℓ)},
    W^{(ℓ)} ← W^{(ℓ)} − η (λ_W^{(ℓ)}/n_{ℓ−1}) ∂L_A/∂W^{(ℓ)},

on the summed loss L_A = Σ_α ℓ(z_α, y_α) (MSE: ½ Σ_{α,i} (z_{i;α} − y_{i;α})²; cross-entropy:
−Σ_α Σ_i p_{i;α} log softmax(z_α)_i). With these rates the infinite-width dynamics is the kernel
dynamics with the frozen NTK Θ^{(L)} of :mod:`pdlt.theory.ntk` (book ch. 10).

Networks are initialized exactly as :func:`pdlt.experiment.ensemble.forward_chunks` draws them
(same seed → the same initial networks as :func:`pdlt.measure`), unless ``antithetic=True``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt import _validation
from pdlt.experiment.ensemble import (
    BLOCK,
    DEFAULT_MAX_MEMORY,
    Chunk,
    check_ensemble_args,
    draw_standard_parameters,
    progress_bar,
    progress_enabled,
    resolve_device,
    resolve_dtype,
    scale_parameters,
)
from pdlt.experiment.ntk import chunk_ntk
from pdlt.network import MLP, validate_inputs

Tensor = torch.Tensor
LOSSES = ("mse", "cross_entropy")


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads (None: unchanged), restoring the setting after.

    pdlt's tensors are small (batched over networks or input pairs); on a busy machine extra
    intra-op threads mostly wait for each other (measured 10–13× slower with 2 threads than
    with 1 on a shared 2-core machine)."""
    saved = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@dataclass(frozen=True)
class TrainedEnsemble:
    """What an ensemble of trained networks did, recorded at chosen steps.

    Attributes
    ----------
    steps:
        (R,) the recorded step numbers (0 = initialization).
    predictions:
        (R, M, N_test, n_out) network outputs on the test inputs at each recorded step.
    train_loss:
        (R, M) the summed training loss L_A of each network.
    train_accuracy:
        (R, M) fraction of training inputs whose argmax output equals the argmax target, for
        n_out ≥ 2 (classification); else None.
    diverged:
        (M,) networks whose loss became non-finite; their later entries are NaN.
    net, learning_rate, loss, seed, antithetic:
        What was trained and how.
    ntk:
        With ``record_ntk=True``: (R, M, N, N) the output-layer NTK on the training inputs at
        each recorded step, averaged over the diagonal output neurons, (1/n_L) Σ_i Ĥ_{ii;δ1δ2}
        (the part with a nonzero mean, book §8.0); else None.
    """

    steps: np.ndarray
    predictions: np.ndarray
    train_loss: np.ndarray
    train_accuracy: np.ndarray | None
    diverged: np.ndarray
    net: MLP
    learning_rate: float
    loss: str
    seed: int
    antithetic: bool = False
    ntk: np.ndarray | None = None

    @property
    def n_networks(self) -> int:
        return self.predictions.shape[1]

    def _index(self, step: int | None) -> int:
        if step is None:
            return len(self.steps) - 1
        hits = np.flatnonzero(self.steps == step)
        if hits.size == 0:
            raise ValueError(f"step {step} was not recorded; recorded steps are {list(self.steps)}")
        return int(hits[0])

    def _alive(self, step: int | None) -> np.ndarray:
        p = self.predictions[self._index(step)]
        ok = ~self.diverged
        if ok.sum() < 2:
            raise ValueError("fewer than 2 networks trained without diverging; no statistics")
        return p[ok]

    def mean(self, step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean of the outputs (N_test, n_out) at a recorded step (default: last) and its
        standard error, over the networks that did not diverge (antithetic pairs are averaged
        first, so the error accounts for their correlation)."""
        p = self._alive(step)
        if self.antithetic and not self.diverged.any():
            p = 0.5 * (p[0::2] + p[1::2])
        return p.mean(0), p.std(0, ddof=1) / math.sqrt(p.shape[0])

    def variance(self, step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble variance of each output (N_test, n_out) and its standard error, from the
        spread of the squared deviations (for antithetic pairs, of their pair averages: the two
        members of a pair are not independent samples of (z − m)²)."""
        p = self._alive(step)
        M = p.shape[0]
        q = (p - p.mean(0)) ** 2 * (M / (M - 1))
        if self.antithetic and not self.diverged.any():
            q = 0.5 * (q[0::2] + q[1::2])
        return q.mean(0), q.std(0, ddof=1) / math.sqrt(q.shape[0])

    def ntk_change(self, step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The mean change of the NTK during training, E[Ĥ(t) − Ĥ(0)] on the training inputs,
        and its standard error across networks (representation learning, book ch. 11, ∞):
        (N, N) each. Needs ``record_ntk=True``."""
        if self.ntk is None:
            raise ValueError("this ensemble was trained without record_ntk=True")
        d = (self.ntk[self._index(step)] - self.ntk[0])[~self.diverged]
        if d.shape[0] < 2:
            raise ValueError("fewer than 2 networks trained without diverging; no statistics")
        return d.mean(axis=0), d.std(axis=0, ddof=1) / np.sqrt(d.shape[0])

    def covariance(self, step: int | None = None, output: int = 0) -> np.ndarray:
        """Ensemble covariance over test inputs (N_test, N_test) of one output."""
        return np.cov(self._alive(step)[:, :, output], rowvar=False)

    def to_frame(self) -> pd.DataFrame:
        """One row per recorded step: mean and spread of the training loss (and accuracy)."""
        rows = {
            "step": self.steps,
            "loss_mean": np.nanmean(self.train_loss, axis=1),
            "loss_median": np.nanmedian(self.train_loss, axis=1),
            "diverged": np.isnan(self.train_loss).sum(axis=1),
        }
        if self.train_accuracy is not None:
            rows["accuracy_mean"] = np.nanmean(self.train_accuracy, axis=1)
        return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# validation


def _targets(y: object, n: int, loss: str) -> torch.Tensor:
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"y must be a numeric array, got {type(y).__name__}: {exc}") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(
            f"y must have shape (N, n_out) with N = {n} rows like X, got {np.shape(y)}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("y contains NaN or inf; targets must be finite")
    if loss == "cross_entropy" and (np.any(arr < 0) or not np.allclose(arr.sum(1), 1.0)):
        raise ValueError("cross_entropy targets must be probabilities (rows ≥ 0 summing to 1)")
    return torch.as_tensor(arr)


def _record_steps(record: object, steps: int) -> np.ndarray:
    if record is None:
        return np.array(sorted({0, steps}))
    try:
        r = np.unique(np.asarray(record, dtype=np.int64).ravel())
    except (TypeError, ValueError):
        raise TypeError(f"record_steps must be a sequence of ints, got {record!r}") from None
    if r.size == 0 or r.min() < 0 or r.max() > steps:
        raise ValueError(f"record_steps must be ints in [0, steps = {steps}], got {record!r}")
    return r


# --------------------------------------------------------------------------------------------
# the batched program


def _forward(net: MLP, Ws: list[Tensor], bs: list[Tensor], x: Tensor) -> Tensor:
    """z^{(L)} of B networks on inputs x (n_0, N): (B, n_L, N)."""
    h, z = x, None
    for ell, (W, b) in enumerate(zip(Ws, bs, strict=True)):
        zn = torch.baddbmm(b, W, h) if h.ndim == 3 else torch.matmul(W, h) + b
        z = zn + net.skip[ell] * z if net.skip[ell] != 0.0 else zn  # residual (eq. B.3)
        h = net.activation(z) if ell < net.depth - 1 else z
    return h


def _output_ntk(net: MLP, Ws: list[Tensor], bs: list[Tensor], x: Tensor) -> Tensor:
    """(1/n_L) Σ_i Ĥ^{(L)}_{ii;δ1δ2} of B networks on inputs x (n_0, N), float64 (B, N, N), from
    their layer structure (:func:`pdlt.experiment.ntk.chunk_ntk`)."""
    zs, h = [], x
    for ell, (W, b) in enumerate(zip(Ws, bs, strict=True)):
        z = torch.baddbmm(b, W, h) if h.ndim == 3 else torch.matmul(W, h) + b
        if net.skip[ell] != 0.0:  # residual (eq. B.3)
            z = z + net.skip[ell] * zs[-1]
        zs.append(z)
        h = net.activation(z) if ell < net.depth - 1 else z
    chunk = Chunk(z=tuple(zs), W=tuple(Ws), b=tuple(bs), x=x, start=0)
    H = chunk_ntk(net, chunk)  # (B, n_L, n_L, N, N)
    return torch.diagonal(H, dim1=1, dim2=2).mean(-1).to(torch.float64)


def _loss_per_network(z: Tensor, y: Tensor, loss: str) -> Tensor:
    """L_A of each network (B,), summed over samples (book §7.1). z: (B, n_L, N), y: (n_L, N)."""
    if loss == "mse":
        return 0.5 * ((z - y) ** 2).sum(dim=(1, 2))
    return -(y * torch.log_softmax(z, dim=1)).sum(dim=(1, 2))


def _accuracy(z: Tensor, y: Tensor) -> Tensor:
    return (z.argmax(dim=1) == y.argmax(dim=0)).to(z.dtype).mean(dim=1)


def _chunk_size(net: MLP, n_inputs: int, dtype: torch.dtype, max_memory: int) -> int:
    """Networks per chunk: parameters, gradients and the autograd graph of one step."""
    itemsize = torch.finfo(dtype).bits // 8
    params = sum(a * b + b for a, b in zip(net.widths[:-1], net.widths[1:], strict=True))
    acts = sum(net.widths[1:]) * n_inputs * 4
    per_net = (3 * params + acts) * itemsize
    b = max(1, max_memory // per_net)
    return int(b if b < BLOCK else (b // BLOCK) * BLOCK)


def train_ensemble(
    net: MLP,
    X: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    *,
    steps: int,
    learning_rate: float,
    loss: str = "mse",
    n_networks: int = 100,
    seed: int = 0,
    X_test: np.ndarray | Tensor | None = None,
    record_steps: Sequence[int] | None = None,
    antithetic: bool = False,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    max_memory: int = DEFAULT_MAX_MEMORY,
    threads: int | None = 1,
    progress: bool | None = None,
    record_ntk: bool = False,
) -> TrainedEnsemble:
    """Train ``n_networks`` networks of ``net`` on (X, y) by full-batch gradient descent with the
    book's per-layer learning rates η·λ_b and η·λ_W/n_{ℓ−1} (book §7.1, §8.0).

    Parameters
    ----------
    net:
        The spec: its C_b, C_W initialize, its lambda_b, lambda_W scale the learning rates.
    X, y:
        Training inputs (N, n_0) and targets (N,) or (N, n_L). Cross-entropy targets are
        probabilities (one-hot rows for labels).
    steps:
        Number of gradient-descent steps (≥ 0).
    learning_rate:
        η (> 0), for the summed loss L_A = Σ_α ℓ_α (not the mean).
    loss:
        ``"mse"`` or ``"cross_entropy"``.
    X_test:
        Inputs to record predictions on (default: X).
    record_steps:
        Steps at which to record predictions, loss and accuracy (default: 0 and ``steps``).
    antithetic:
        Pair the networks: network 2k+1 is network 2k with the last layer's W, b negated, so its
        initial output is exactly −z(0). At infinite width this cancels the initial-function
        noise from the ensemble mean (the NTK is even in the last layer), which cuts the Monte
        Carlo error of the mean; :meth:`TrainedEnsemble.mean` accounts for the pairing.
    dtype, device, max_memory:
        float32 (default) or float64; "cpu" or "cuda"; memory bound for one chunk of networks.
    threads:
        CPU threads for torch while training (restored afterwards); None keeps torch's setting.
        Default 1: the work is many small matrix products batched over networks, where
        intra-op threads buy little and, on a busy machine, cost a lot (measured 13× slower
        with 2 threads than with 1 on a shared 2-core machine). Pass more for wide networks on
        an idle many-core machine.
    progress:
        Progress bar over steps × chunks (default: only on a terminal).
    record_ntk:
        Also record the output-layer NTK on the training inputs at the recorded steps
        (:attr:`TrainedEnsemble.ntk`, :meth:`TrainedEnsemble.ntk_change`).

    Returns
    -------
    TrainedEnsemble

    Examples
    --------
    >>> net = pdlt.MLP("tanh", depth=3, width=128, input_dim=2)
    >>> ens = pdlt.train_ensemble(net, X, y, steps=200, learning_rate=0.1, n_networks=256)
    >>> mean, err = ens.mean()
    """
    return train_ensembles(
        [net], X, y, steps=steps, learning_rate=learning_rate, loss=loss,
        n_networks=n_networks, seed=seed, X_test=X_test, record_steps=record_steps,
        antithetic=antithetic, dtype=dtype, device=device, max_memory=max_memory,
        threads=threads, progress=progress, record_ntk=record_ntk,
    )[0]  # fmt: skip


def _same_but_variances(nets: Sequence[MLP]) -> None:
    first = nets[0]
    for other in nets[1:]:
        if not isinstance(other, MLP):
            raise TypeError(f"nets must be pdlt.MLP specs, got {type(other).__name__}")
        same = (
            repr(other.activation) == repr(first.activation)
            and other.widths == first.widths
            and list(other.lambda_W) == list(first.lambda_W)
            and list(other.lambda_b) == list(first.lambda_b)
            and list(other.skip) == list(first.skip)
        )
        if not same:
            raise ValueError(
                "train_ensembles trains networks that differ only in C_W and C_b: every net "
                "must have the same activation, widths, learning-rate factors and skips"
            )


def train_ensembles(
    nets: Sequence[MLP],
    X: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    *,
    steps: int,
    learning_rate: float,
    loss: str = "mse",
    n_networks: int = 100,
    seed: int = 0,
    X_test: np.ndarray | Tensor | None = None,
    record_steps: Sequence[int] | None = None,
    antithetic: bool = False,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    max_memory: int = DEFAULT_MAX_MEMORY,
    threads: int | None = 1,
    progress: bool | None = None,
    record_ntk: bool = False,
) -> list[TrainedEnsemble]:
    """:func:`train_ensemble` for several specs that differ only in their initialization
    variances C_W, C_b, trained together as one batched program (batch = spec × network).

    Network m of every spec is drawn from the same standard normals, scaled by
    √(C_W^{(ℓ)}/n_{ℓ−1}) and √C_b^{(ℓ)} of its spec (:func:`pdlt.experiment.ensemble.
    scale_parameters`), so ensemble k is exactly ``train_ensemble(nets[k], ..., seed=seed)``:
    the same initial networks, the same update (book §7.1, §8.0), one batched forward/backward
    pass per step for all specs (the trainability phase diagram trains a whole row of C_W at
    one depth this way). Arguments as in :func:`train_ensemble`; returns one
    :class:`TrainedEnsemble` per spec, in order.
    """
    if isinstance(nets, MLP) or not isinstance(nets, Sequence) or len(nets) == 0:
        raise TypeError("nets must be a non-empty sequence of pdlt.MLP specs")
    if not isinstance(nets[0], MLP):
        raise TypeError(f"nets must be pdlt.MLP specs, got {type(nets[0]).__name__}")
    _same_but_variances(nets)
    net = nets[0]
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    steps = _validation.integer("steps", steps, min=0)
    learning_rate = _validation.positive("learning_rate", learning_rate)
    check_ensemble_args(n_networks, seed, max_memory)
    if threads is not None:
        threads = _validation.integer("threads", threads, min=1)
    if antithetic and n_networks % 2:
        raise ValueError(f"antithetic=True needs an even n_networks, got {n_networks}")
    dtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    x = validate_inputs(net, X)
    Y = _targets(y, x.shape[0], loss)
    if Y.shape[1] != net.output_dim:
        raise ValueError(
            f"y has {Y.shape[1]} output column(s) but the network has output_dim = {net.output_dim}"
        )
    xt = validate_inputs(net, X_test) if X_test is not None else x
    rec = _record_steps(record_steps, int(steps))
    classify = net.output_dim >= 2

    xa = x.to(dev, dtype).T  # (n_0, N_A)
    xb = xt.to(dev, dtype).T
    ya = Y.to(dev, dtype).T  # (n_L, N_A)
    K = len(nets)
    n_draw = n_networks // 2 if antithetic else n_networks
    # a chunk holds B networks of every spec: K·B in one batched program
    B = max(1, min(_chunk_size(net, x.shape[0] + xt.shape[0], dtype, max_memory) // K, n_draw))
    R, M = len(rec), n_networks
    preds = np.full((K, R, M, xt.shape[0], net.output_dim), np.nan)
    ntks = np.full((K, R, M, x.shape[0], x.shape[0]), np.nan) if record_ntk else None
    losses = np.full((K, R, M), np.nan)
    accs = np.full((K, R, M), np.nan) if classify else None
    diverged = np.zeros((K, M), dtype=bool)

    with torch_threads(threads if dev.type == "cpu" else None):
        n_chunks = math.ceil(n_draw / B)
        with progress_bar(
            "training", n_chunks * max(int(steps), 1), progress_enabled(progress)
        ) as adv:
            for start in range(0, n_draw, B):
                size = min(B, n_draw - start)
                Ws, bs = _initial_parameters(nets, int(seed), start, size, antithetic, dtype, dev)
                lo, hi = (2 * start, 2 * (start + size)) if antithetic else (start, start + size)
                per_spec = hi - lo

                # bound now: the recorder is called within this chunk only
                def record(r, z, per_net, alive, Ws=Ws, bs=bs, lo=lo, hi=hi, per_spec=per_spec):
                    zb = _forward(net, Ws, bs, xb) if X_test is not None else z
                    out = zb.transpose(1, 2).detach().to("cpu", torch.float64).numpy()
                    out = out.reshape(K, per_spec, *out.shape[1:])
                    keep = alive.cpu().numpy().reshape(K, per_spec)
                    ell = per_net.detach().cpu().numpy().reshape(K, per_spec)
                    acc = _accuracy(z, ya).cpu().numpy().reshape(K, per_spec) if classify else None
                    H = _output_ntk(net, Ws, bs, xa).cpu().numpy() if record_ntk else None
                    for k in range(K):
                        kk = keep[k]
                        preds[k, r, lo:hi][kk] = out[k][kk]
                        losses[k, r, lo:hi][kk] = ell[k][kk]
                        if classify:
                            accs[k, r, lo:hi][kk] = acc[k][kk]
                        if record_ntk:
                            Hk = H.reshape(K, per_spec, *H.shape[1:])[k]
                            ntks[k, r, lo:hi][kk] = Hk[kk]

                alive = gradient_descent(
                    net, Ws, bs, xa, ya, loss, int(steps), learning_rate, rec, record, adv
                )
                diverged[:, lo:hi] = ~alive.cpu().numpy().reshape(K, per_spec)
    out_list = []
    for k, spec in enumerate(nets):
        if diverged[k].any():
            warnings.warn(
                f"{int(diverged[k].sum())} of {M} networks diverged (training loss became "
                "non-finite); their entries after divergence are NaN and they are flagged in "
                ".diverged — lower the learning rate to train them",
                RuntimeWarning,
                stacklevel=3 if K == 1 else 2,
            )
        out_list.append(
            TrainedEnsemble(
                steps=rec,
                predictions=preds[k],
                train_loss=losses[k],
                train_accuracy=accs[k] if classify else None,
                diverged=diverged[k],
                net=spec,
                learning_rate=float(learning_rate),
                loss=loss,
                seed=int(seed),
                antithetic=bool(antithetic),
                ntk=ntks[k] if record_ntk else None,
            )
        )
    return out_list


def _initial_parameters(
    nets: Sequence[MLP], seed: int, start: int, size: int, antithetic: bool, dtype, dev
) -> tuple[list[Tensor], list[Tensor]]:
    """Networks ``start … start+size−1`` of every spec, stacked spec-major (K·size, or K·2·size
    with antithetic pairs): one draw of standard normals, scaled per spec."""
    Zw, Zb = draw_standard_parameters(nets[0], seed, start, size, dev)
    parts = []
    for spec in nets:
        Ws, bs = scale_parameters(spec, Zw, Zb, dtype)
        if antithetic:  # interleave (θ, θ with the last layer negated)
            Ws = [torch.stack([W, W], 1).flatten(0, 1) for W in Ws]
            bs = [torch.stack([b, b], 1).flatten(0, 1) for b in bs]
            sign = torch.tensor([1.0, -1.0], dtype=dtype, device=dev).repeat(size)
            Ws[-1] = Ws[-1] * sign[:, None, None]
            bs[-1] = bs[-1] * sign[:, None, None]
        parts.append((Ws, bs))
    if len(parts) == 1:
        return parts[0]
    depth = len(parts[0][0])
    Ws = [torch.cat([p[0][ell] for p in parts]) for ell in range(depth)]
    bs = [torch.cat([p[1][ell] for p in parts]) for ell in range(depth)]
    return Ws, bs


def gradient_descent(
    net: MLP,
    Ws: list[Tensor],
    bs: list[Tensor],
    xa: Tensor,
    ya: Tensor,
    loss: str,
    steps: int,
    learning_rate: float,
    record_at: Sequence[int] = (),
    record: Callable[[int, Tensor, Tensor, Tensor], None] | None = None,
    advance: Callable[[int], None] | None = None,
) -> Tensor:
    """Full-batch gradient descent of a batch of B networks, in place: the book's update
    b ← b − η λ_b ∂L_A/∂b, W ← W − η (λ_W/n_{ℓ−1}) ∂L_A/∂W (§7.1, §8.0) on the summed loss,
    ``steps`` times. ``Ws``/``bs``: (B, n_ℓ, n_{ℓ−1}) / (B, n_ℓ, 1); ``xa`` (n_0, N), ``ya``
    (n_L, N). At each step in ``record_at`` (sorted), ``record(r, z, per_net_loss, alive)`` is
    called before the update, without gradients. A network whose loss becomes non-finite stops
    moving; returns the (B,) mask of networks that never diverged."""
    rates_W = [learning_rate * net.lambda_W[i] / net.widths[i] for i in range(net.depth)]
    rates_b = [learning_rate * net.lambda_b[i] for i in range(net.depth)]
    params = [p.requires_grad_(True) for p in (*Ws, *bs)]
    dtype = Ws[0].dtype
    alive = torch.ones(Ws[0].shape[0], dtype=torch.bool, device=Ws[0].device)
    r, R = 0, len(record_at)
    for step in range(steps + 1):
        z = _forward(net, Ws, bs, xa)
        per_net = _loss_per_network(z, ya, loss)
        alive &= torch.isfinite(per_net)
        if r < R and record_at[r] == step:
            if record is not None:
                with torch.no_grad():
                    record(r, z, per_net, alive)
            r += 1
        if step == steps:
            break
        total = torch.where(alive, per_net, torch.zeros_like(per_net)).sum()
        grads = torch.autograd.grad(total, params)
        with torch.no_grad():
            if bool(alive.all()):  # the common case: no mask, no NaN to clean (~10% of a step)
                for i in range(net.depth):
                    Ws[i].sub_(grads[i], alpha=rates_W[i])
                    bs[i].sub_(grads[net.depth + i], alpha=rates_b[i])
            else:
                mask = alive.to(dtype)[:, None, None]
                for i in range(net.depth):
                    Ws[i].sub_(rates_W[i] * mask * torch.nan_to_num(grads[i]))
                    bs[i].sub_(rates_b[i] * mask * torch.nan_to_num(grads[net.depth + i]))
        if advance is not None:
            advance(1)
    return alive
