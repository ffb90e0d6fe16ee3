"""The accuracy map over (C_W, C_b) at growing depth (Lee et al. 2017, Fig. 4; book ch. 5, 6.3).

Test accuracy of the infinite-width Bayesian network (the NNGP, book §6.3) — or of real trained
networks — over a grid of initialization hyperparameters (C_W, C_b) = (σ_w², σ_b²), one panel per
depth. As depth grows good accuracy survives only near the order–chaos line χ_⊥ = 1 (book §5.1),
and for ReLU along the semi-critical line C_W = 2 (χ_⊥ = C_W/2 = 1 at every C_b; the kernel grows
linearly, K^{(ℓ)} = K^{(1)} + (ℓ−1)C_b, instead of reaching a fixed point).

The NNGP route, ``method="nngp"``
---------------------------------
The kernel recursion (book eq. 4.1x, §4.3)

    K^{(1)}_ab = C_b + C_W x_a·x_b/n_0,     K^{(ℓ+1)}_ab = C_b + C_W ⟨σ(z_a) σ(z_b)⟩_{K^{(ℓ)}}

acts elementwise in (C_W, C_b), so the whole grid is one tensor program. Two routes:

* ``"table"`` (default when every input has the same norm, as after the paper's per-example
  standardisation): then K^{(ℓ)}_aa = q^{(ℓ)} for every input and K^{(ℓ)}_ab is a function of the
  input cosine ρ_ab alone. That function is propagated through the layers on a table of cosines
  (G grid points × M nodes), together with its derivative dK^{(ℓ+1)}/dρ =
  C_W ⟨σ'σ'⟩_{K^{(ℓ)}} dK^{(ℓ)}/dρ (Price's theorem), and read off at the N² data cosines by cubic
  Hermite interpolation in s = √(θ/π), θ = arccos ρ (smooth where the arc-cosine kernels have
  their √(1−ρ) edge). ⟨σσ⟩ is the activation's closed form (ReLU family, erf, sin/cos), else the
  Mehler series Σ_k c_k(q)² ρ^k with Hermite coefficients from quadrature (book §4.1 footnote;
  its derivative series gives ⟨σ'σ'⟩). The interpolation and truncation error are estimated
  (the table at half the resolution, the Parseval tail) and reported as ``kernel_error``.
* ``"exact"``: the recursion on all N² pairs, batched over grid points for closed forms and one
  :func:`pdlt.gaussian.pair_expectation` call per grid point otherwise. Equal to
  :class:`pdlt.NNGPRegressor` to round-off (tested); for small N or unequal input norms.

The posterior mean m_B = K_BA (K̃ + ε² q̄)^{-1} Y (book §6.3.1) is a batched Cholesky over grid
points; targets are one-hot − 0.1 (Lee et al.), the class is the argmax. The noise is relative,
ε² × q̄ with q̄ the mean diagonal of K̃, so that the map does not depend on the kernel's overall
scale (which runs over many decades across the grid).

Degenerate kernels
------------------
Deep in the ordered phase every input looks alike (all correlations → 1); deep in the chaotic
phase every pair looks alike (correlations → c*). Either way the test–train covariances that
carry the prediction stop varying across inputs, and once their spread is at round-off the
computed posterior is noise. Such grid points are flagged ``degenerate`` (spread of the
test–train correlations below ``degenerate_tol``, or K̃ + ε²q̄ not numerically positive definite)
and given the accuracy of the exact limit of the posterior there — every test input gets the
same prediction, the class with the largest training-target sum, i.e. ``chance`` (the frequency
of that class in the test set). They are never NaN and never noise.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from pdlt.activations import Activation
from pdlt.activations import activation as _activation
from pdlt.gaussian import hermite_coefficients
from pdlt.gaussian.mehler import horner

Tensor = torch.Tensor
_DT = torch.float64

DEFAULT_C_W = np.linspace(0.5, 4.0, 15)
DEFAULT_C_B = np.linspace(0.0, 2.0, 11)
DEFAULT_DEPTHS = (5, 20, 50)
# method="trained" is ~10^4 times dearer per grid point: a coarser grid by default.
DEFAULT_TRAINED_C_W = np.linspace(0.5, 4.0, 8)
DEFAULT_TRAINED_C_B = np.linspace(0.0, 2.0, 5)
DEFAULT_TRAINED: dict[str, Any] = {
    "width": 64,
    "steps": 1000,
    "learning_rate": 1.5,
    "n_networks": 2,
}
METHODS = ("nngp", "trained")
ROUTES = ("auto", "table", "exact")
TABLE_NODES = 1025  # cosine-table nodes for closed forms (the error estimate uses every other one)
MEHLER_TABLE_NODES = 513  # for the Mehler route, whose cost grows with the nodes × series order
_MEHLER_KMAX = 400
_MEHLER_TOL = 1e-14  # relative Parseval tail at which the series is cut
_EQUAL_NORM_RTOL = 1e-10
# Error of one layer's expectation relative to ⟨σ²⟩: quadrature for the Mehler coefficients
# (measured ~1e-13 against a 3000² product rule), round-off for closed forms.
_LAYER_FLOOR = 1e-12


# --------------------------------------------------------------------------------------------
# data


def standardize_examples(X: np.ndarray) -> np.ndarray:
    """Per-example standardisation (Lee et al. 2017): each input gets mean 0 and variance 1 over
    its features, so |x|² = n_0 and K^{(1)}_aa = C_b + C_W for every input."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(axis=1, keepdims=True)
    sd = Xc.std(axis=1, keepdims=True)
    if np.any(sd == 0):
        bad = int(np.flatnonzero(sd[:, 0] == 0)[0])
        raise ValueError(f"input {bad} is constant over its features; it cannot be standardised")
    return Xc / sd


def paper_split(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    *,
    per_class: int = 100,
    n_test: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The paper's MNIST setting (Lee et al. 2017, §3): the first ``per_class`` examples of each
    class for training, inputs standardised per example. Without ``X_test`` the test set is
    the examples not used for training (the first ``n_test`` of them, default all)."""
    X = np.asarray(X, dtype=np.float64)
    y = _labels(y, X.shape[0], "y")
    take = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)])
    take.sort()
    if X_test is None:
        rest = np.setdiff1d(np.arange(X.shape[0]), take)[:n_test]
        X_test, y_test = X[rest], y[rest]
    elif y_test is None:
        raise ValueError("X_test was given without y_test")
    Xt = np.asarray(X_test, dtype=np.float64)[:n_test]
    yt = _labels(y_test, np.shape(X_test)[0], "y_test")[:n_test]
    return standardize_examples(X[take]), y[take], standardize_examples(Xt), yt


def digits_split(n_train: int = 1000, n_test: int | None = None, seed: int = 0):
    """scikit-learn's bundled 8×8 digits (no download), shuffled by ``seed``, standardised per
    example: the first ``n_train`` for training, the next ``n_test`` (default: the rest of the
    1,797) for testing. Returns (X, y, X_test, y_test)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    n = len(data.target)
    if not 2 <= n_train < n:
        raise ValueError(f"n_train must be in [2, {n - 1}] for the digits, got {n_train}")
    idx = np.random.default_rng(seed).permutation(n)
    tr, te = idx[:n_train], idx[n_train:][:n_test]
    X = standardize_examples(data.data)
    y = data.target.astype(np.int64)
    return X[tr], y[tr], X[te], y[te]


def one_hot_targets(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Regression targets one-hot − 0.1 (Lee et al. 2017): zero mean over 10 classes."""
    return np.eye(n_classes)[y] - 0.1


def _labels(y: object, n: int, what: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim == 2:
        arr = arr.argmax(axis=1)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{what} must be {n} integer class labels, got shape {np.shape(y)}")
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must hold finite non-negative integer class labels")
    if np.any(arr < 0) or np.any(arr != np.round(arr)):
        raise ValueError(f"{what} must hold non-negative integer class labels")
    return arr.astype(np.int64)


def _inputs(X: object, what: str) -> np.ndarray:
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be a numeric (N, n_0) array: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{what} must be a 2-D (N, n_0) array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or inf")
    return arr


# --------------------------------------------------------------------------------------------
# the kernel over the grid: cosine-table route


def _mehler_layer(act: Activation, q: Tensor, rho: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """⟨σσ⟩, ⟨σ'σ'⟩ on the table and ⟨σ²⟩ at equal variances q (G,) and correlations ρ (G, M)
    by the Mehler series ⟨σ(z_a)σ(z_b)⟩ = Σ_k c_k² ρ^k (:mod:`pdlt.gaussian.mehler`); its
    ρ-derivative over q is ⟨σ'σ'⟩ (Price). Also returns the relative Parseval tail (G,)."""
    c, second = hermite_coefficients(act.fn, q, _MEHLER_KMAX, kinks=act.kinks)
    c2 = c**2  # (G, kmax+1)
    scale = torch.clamp(second, min=1e-300)
    tail = torch.clamp(second[:, None] - torch.cumsum(c2, 1), min=0.0) / scale[:, None]
    ok = torch.nonzero((tail <= _MEHLER_TOL).all(0))
    kcut = int(ok[0]) if ok.numel() else _MEHLER_KMAX
    val, der = horner(c2[:, : kcut + 1].T[:, :, None], rho, derivative=True)
    return val, der / q[:, None], second, tail[:, kcut]


def _pair_layer(act: Activation, q: Tensor, K: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(⟨σσ⟩, ⟨σ'σ'⟩) at equal variances q (G,) and covariances K (G, M), ⟨σ²⟩_q, and the
    relative truncation error (0 for closed forms)."""
    f00, f11 = act.closed_forms.get((0, 0)), act.closed_forms.get((1, 1))
    if f00 is not None and f11 is not None:
        qq = q[:, None]
        ss = f00(qq, qq, K)
        dd = f11(qq, qq, K)
        second = f00(qq, qq, qq)[:, 0]
        return ss, dd, second, torch.zeros_like(q)
    rho = torch.clamp(K / q[:, None], -1.0, 1.0)
    return _mehler_layer(act, q, rho)


def _table_kernels(
    act: Activation,
    cw: Tensor,
    cb: Tensor,
    q0: float,
    s_nodes: Tensor,
    depths: Sequence[int],
) -> dict[int, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Walk the kernel map once to the deepest depth on the cosine table.

    ``s_nodes`` (M,) are table nodes in s = √(θ/π), ρ = cos(π s²). Returns for each requested
    depth (q (G,), K (G, M), dK/ds (G, M), error (G,)): the last a bound on the error of the
    table entries relative to q from the layers so far (series tails and quadrature floors,
    each amplified by the later layers' slopes)."""
    theta = math.pi * s_nodes**2
    rho0 = torch.cos(theta)
    drho_ds = -torch.sin(theta) * 2 * math.pi * s_nodes
    q = cb + cw * q0  # layer 1 (book §4.1)
    K = cb[:, None] + cw[:, None] * q0 * rho0[None, :]
    dK = (cw * q0)[:, None].expand_as(K).clone()  # dK/dρ_0
    err = torch.zeros_like(q)  # absolute error bound of the table entries
    out: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
    with np.errstate(all="ignore"):
        for layer in range(1, max(depths) + 1):
            if layer in depths:
                out[layer] = (q.clone(), K.clone(), dK * drho_ds[None, :], err / q)
            if layer == max(depths):
                break
            ss, dd, second, tail = _pair_layer(act, q, K)
            # An error δK in layer ℓ moves layer ℓ+1 by C_W⟨σ'σ'⟩ δK (Price): chaotic layers
            # (slope > 1) amplify it. Each layer adds the series tail and the quadrature or
            # round-off floor of one expectation.
            slope = (cw[:, None] * dd).abs().amax(1)
            err = slope * err + cw * second * (tail + _LAYER_FLOOR)
            K = cb[:, None] + cw[:, None] * ss  # book §4.3
            dK = cw[:, None] * dd * dK  # chain rule with Price: d⟨σσ⟩/dK_ab = ⟨σ'σ'⟩
            q = cb + cw * second
    return out


def _hermite_weights(s: Tensor, s_nodes: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Index i of the table interval holding each s, and the four cubic Hermite weights (on the
    values at i, i+1 and the derivatives at i, i+1, the latter times the node spacing)."""
    M = s_nodes.shape[0]
    lo, hi = float(s_nodes[0]), float(s_nodes[-1])
    h = (hi - lo) / (M - 1) if M > 1 else 1.0
    pos = (s - lo) / h
    i = torch.clamp(torch.floor(pos), 0, M - 2).to(torch.int64)
    t = pos - i
    t2, t3 = t * t, t * t * t
    weights = [2 * t3 - 3 * t2 + 1, (t3 - 2 * t2 + t) * h, -2 * t3 + 3 * t2, (t3 - t2) * h]
    return i, t, weights


def _interpolate(T: Tensor, D: Tensor, i: Tensor, weights: list[Tensor]) -> Tensor:
    """Cubic Hermite interpolation of every row of the tables T, D (C, M) at the points given
    by ``_hermite_weights``: (C, P)."""
    out = T[:, i] * weights[0]
    out.addcmul_(D[:, i], weights[1])
    j = i + 1
    out.addcmul_(T[:, j], weights[2])
    out.addcmul_(D[:, j], weights[3])
    return out


def _s_of(cos: Tensor) -> Tensor:
    return torch.sqrt(torch.arccos(torch.clamp(cos, -1.0, 1.0)) / math.pi)


# --------------------------------------------------------------------------------------------
# the kernel over the grid: exact route


def _exact_kernels(
    act: Activation, cw: Tensor, cb: Tensor, x: Tensor, depths: Sequence[int]
) -> dict[int, Tensor]:
    """K^{(ℓ)} on all N² pairs at each requested depth, (G, N, N): batched over the grid with a
    closed form, else one :func:`pdlt.gaussian.pair_expectation` per grid point."""
    from pdlt.gaussian import pair_expectation

    gram = x @ x.T / x.shape[1]
    K = cb[:, None, None] + cw[:, None, None] * gram[None]
    f00 = act.closed_forms.get((0, 0))
    out: dict[int, Tensor] = {}
    for layer in range(1, max(depths) + 1):
        if layer in depths:
            out[layer] = K.clone()
        if layer == max(depths):
            break
        if f00 is not None:
            d = torch.diagonal(K, dim1=1, dim2=2)
            ss = f00(d[:, :, None], d[:, None, :], K)
        else:
            ss = torch.stack([pair_expectation(act, Kg, (0, 0)) for Kg in K])
        K = cb[:, None, None] + cw[:, None, None] * ss
    return out


# --------------------------------------------------------------------------------------------
# the posterior over the grid


def _posterior_accuracy(
    A: Tensor,
    K_BA: Tensor,
    Y: Tensor,
    y_test: Tensor,
    degenerate_tol: float,
    q: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Accuracy of argmax m_B, m_B = K_BA (K̃ + ε² q̄)^{-1} Y (book §6.3.1), for a chunk of grid
    points (C, ·, ·); with the spread of the test–train correlations and the degenerate flag.

    ``A`` is K̃ + ε² q̄ (only its lower triangle is read, by the Cholesky factorization)."""
    C, NA, _ = A.shape
    L, info = torch.linalg.cholesky_ex(A)
    ok = info == 0
    if not bool(ok.all()):
        L = torch.where(ok[:, None, None], L, torch.eye(NA, dtype=_DT).expand(C, NA, NA))
    alpha = torch.cholesky_solve(Y.expand(C, *Y.shape), L)
    mean = K_BA @ alpha
    acc = (mean.argmax(2) == y_test[None, :]).to(_DT).mean(1)
    # The prediction varies across test inputs only through the variation of K_BA.
    spread = K_BA.flatten(1).std(1) / q
    finite = torch.isfinite(mean).all(2).all(1) & torch.isfinite(spread)
    degenerate = ~ok | ~finite | ~(spread >= degenerate_tol)
    return acc, torch.nan_to_num(spread, nan=0.0), degenerate


def _limit_accuracy(Y: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy of the posterior's limit when all inputs look alike: every test input gets the
    prediction Σ_α y_α / (N_A + ε²) direction, i.e. the class with the largest target sum."""
    return float(np.mean(y_test == int(np.argmax(Y.sum(0)))))


# --------------------------------------------------------------------------------------------
# trained networks


def accuracy_map_cell(
    C_W: float,
    C_b: float,
    depth: int,
    *,
    seed: int,
    activation: str,
    width: int,
    steps: int,
    learning_rate: float,
    n_networks: int,
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
) -> dict:
    """Train ``n_networks`` networks at one grid point and return their test accuracy.

    MSE on one-hot − 0.1 targets (as the NNGP), full-batch gradient descent with the book's
    learning-rate scaling λ_b = λ_W = 1/L (book §9.4). The step is ``learning_rate`` in units of
    the stability limit set by the infinite-width NTK: η = learning_rate / (N_A Θ̄), Θ̄ the
    NTK diagonal Θ^{(L)}_aa (book §8.2), since λ_max(Θ̃) ≤ N_A Θ̄ (book §10.2): the NTK's scale
    runs over many decades across the grid, so one fixed η would diverge on one side and
    freeze on the other. A pure function of its arguments (a sweep cell); diverged networks
    count at chance.
    """
    from pdlt.experiment.train import train_ensemble
    from pdlt.network import MLP
    from pdlt.theory.learning import output_kernels

    n_classes = int(max(np.max(y), np.max(y_test))) + 1
    Y = one_hot_targets(np.asarray(y), n_classes)
    net = MLP(
        activation,
        depth=int(depth),
        width=int(width),
        input_dim=X.shape[1],
        output_dim=n_classes,
        C_W=float(C_W),
        C_b=float(C_b),
        lambda_b=1.0 / depth,
        lambda_W=1.0 / depth,
    )
    _, theta = output_kernels(net, X[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # divergence is a result here
        ens = train_ensemble(
            net,
            X,
            Y,
            steps=int(steps),
            learning_rate=float(learning_rate) / (X.shape[0] * float(theta[0, 0])),
            loss="mse",
            n_networks=int(n_networks),
            seed=int(seed),
            X_test=X_test,
            progress=False,
        )
    pred = ens.predictions[-1].argmax(-1)  # (M, N_test)
    acc = (pred == np.asarray(y_test)[None, :]).mean(1)
    chance = _limit_accuracy(Y, np.asarray(y_test))
    acc = np.where(ens.diverged, chance, acc)
    return {
        "accuracy": float(np.mean(acc)),
        "accuracy_min": float(np.min(acc)),
        "diverged": float(np.mean(ens.diverged)),
    }


def trained_accuracy_map(
    act: Activation,
    cw: np.ndarray,
    cb: np.ndarray,
    depths: tuple[int, ...],
    XA: np.ndarray,
    yA: np.ndarray,
    XB: np.ndarray,
    yB: np.ndarray,
    *,
    width: int = DEFAULT_TRAINED["width"],
    steps: int = DEFAULT_TRAINED["steps"],
    learning_rate: float = DEFAULT_TRAINED["learning_rate"],
    n_networks: int = DEFAULT_TRAINED["n_networks"],
    seeds: Sequence[int] = (0,),
    store: Any = None,
    scheduler: Any = "serial",
    n_workers: int | None = None,
    progress: bool | None = None,
) -> AccuracyMap:
    """``method="trained"``: one sweep cell per (depth, C_b, C_W) and seed (resumable with a
    ``store``; ``scheduler`` "serial", "processes" or a Dask address). Settings as in
    :func:`accuracy_map_cell`; the accuracy is the mean over networks and seeds."""
    from pdlt.experiment.sweep import sweep

    if not act.builtin:
        raise ValueError("method='trained' needs a built-in activation (cells travel by name)")
    for name, v in (("width", width), ("steps", steps), ("n_networks", n_networks)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} must be an int ≥ 1, got {v!r}")
    learning_rate = _positive("learning_rate", learning_rate)
    seeds = tuple(seeds)
    res = sweep(
        accuracy_map_cell,
        {"depth": list(depths), "C_b": cb.tolist(), "C_W": cw.tolist()},
        seeds=seeds,
        constants={
            "activation": act.name,
            "width": int(width),
            "steps": int(steps),
            "learning_rate": learning_rate,
            "n_networks": int(n_networks),
            "X": XA,
            "y": yA,
            "X_test": XB,
            "y_test": yB,
        },
        store=store,
        scheduler=scheduler,
        n_workers=n_workers,
        progress=progress,
    )
    df = res.to_frame().groupby(["depth", "C_b", "C_W"], sort=True).mean(numeric_only=True)
    shape = (len(depths), cb.size, cw.size)
    acc = df["accuracy"].to_numpy().reshape(shape)
    degenerate = (df["diverged"].to_numpy() >= 1.0).reshape(shape)
    crit, semi = _critical_overlay(act, cb)
    n_classes = int(max(yA.max(), yB.max())) + 1
    return AccuracyMap(
        activation=act.name,
        method="trained",
        C_W=cw,
        C_b=cb,
        depths=depths,
        accuracy=acc,
        degenerate=degenerate,
        spread=np.full(shape, np.nan),
        chance=_limit_accuracy(one_hot_targets(yA, n_classes), yB),
        critical_C_W=crit,
        semi_critical=semi,
        kernel_error=np.zeros(len(depths)),
        info={
            "width": int(width),
            "steps": int(steps),
            "learning_rate": learning_rate,
            "n_networks": int(n_networks),
            "seeds": list(seeds),
            "n_train": XA.shape[0],
            "n_test": XB.shape[0],
            "computed": res.computed,
            "cached": res.cached,
        },
    )


# --------------------------------------------------------------------------------------------
# result


@dataclass(frozen=True)
class AccuracyMap:
    """Test accuracy over (depth, C_b, C_W) (Lee et al. 2017, Fig. 4; book §5.1, §6.3).

    Attributes
    ----------
    activation:
        The activation's name.
    method:
        ``"nngp"`` (infinite-width Bayesian posterior mean) or ``"trained"`` (real networks).
    C_W, C_b, depths:
        The grid: (W,), (B,) float64 and the depths L (MLP depth: L weight layers).
    accuracy:
        (D, B, W) test accuracy, ``accuracy[d, i, j]`` at depths[d], C_b[i], C_W[j]. At a
        degenerate point it is the limit of the posterior there, ``chance`` (see below).
    degenerate:
        (D, B, W) bool: the kernel no longer distinguishes the inputs to within round-off (NNGP:
        spread of the test–train correlations < ``degenerate_tol``, or K̃ + ε²q̄ not positive
        definite; trained: every network diverged).
    spread:
        (D, B, W) spread (standard deviation) of the test–train correlations K_BA/q (NNGP), the
        information the prediction can use; NaN for trained maps.
    chance:
        Accuracy of a constant prediction (the class with the largest training-target sum).
    critical_C_W:
        (B,) the order–chaos line χ_⊥(K*) = 1 at each C_b (:func:`pdlt.critical_line`); NaN where
        none exists.
    semi_critical:
        True for the scale-invariant class (ReLU): the line C_W = 1/A_2 (2 for ReLU) is
        semi-critical, χ_⊥ = 1 with the kernel growing linearly for C_b > 0.
    kernel_error:
        (D,) estimated max relative error of the NNGP kernel (cosine-table interpolation plus
        Mehler truncation; 0 on the exact route).
    info:
        Settings: route, noise, n_train, n_test, and the training settings of a trained map.
    """

    activation: str
    method: str
    C_W: np.ndarray
    C_b: np.ndarray
    depths: tuple[int, ...]
    accuracy: np.ndarray
    degenerate: np.ndarray
    spread: np.ndarray
    chance: float
    critical_C_W: np.ndarray
    semi_critical: bool
    kernel_error: np.ndarray
    info: dict = field(default_factory=dict)

    def best_C_W(self) -> np.ndarray:
        """(D, B): the C_W of the highest accuracy at each depth and C_b."""
        return self.C_W[np.argmax(self.accuracy, axis=2)]

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per (depth, C_b, C_W)."""
        D, B, W = np.meshgrid(np.asarray(self.depths), self.C_b, self.C_W, indexing="ij")
        return pd.DataFrame(
            {
                "depth": D.ravel(),
                "C_b": B.ravel(),
                "C_W": W.ravel(),
                "accuracy": self.accuracy.ravel(),
                "degenerate": self.degenerate.ravel(),
                "spread": self.spread.ravel(),
            }
        )

    def __repr__(self) -> str:
        best = float(np.max(self.accuracy))
        return (
            f"AccuracyMap({self.activation!r}, method={self.method!r}, depths={self.depths}, "
            f"C_b: {self.C_b.size} values, C_W: {self.C_W.size} values, best accuracy "
            f"{best:.3f}, degenerate points {int(self.degenerate.sum())})"
        )

    def plot(self, fig: Any = None):
        """One heat-map panel per depth with χ_⊥ = 1 (and, for ReLU, the semi-critical line
        C_W = 2) overlaid; degenerate points hatched. Returns the matplotlib Figure."""
        import matplotlib

        if fig is None:
            matplotlib.use(matplotlib.get_backend())
            import matplotlib.pyplot as plt

            fig, _ = plt.subplots(
                1, len(self.depths), figsize=(3.6 * len(self.depths) + 0.8, 3.3), squeeze=False
            )
        axes = fig.axes[: len(self.depths)]
        cw_e, cb_e = _edges(self.C_W), _edges(self.C_b)
        vmin = min(self.chance, float(np.nanmin(self.accuracy)))
        mesh = None
        for d, ax in enumerate(axes):
            mesh = ax.pcolormesh(
                cw_e, cb_e, self.accuracy[d], cmap="viridis", vmin=vmin, vmax=1.0, shading="flat"
            )
            from matplotlib.patches import Rectangle

            for i, j in zip(*np.nonzero(self.degenerate[d]), strict=True):
                ax.add_patch(
                    Rectangle(
                        (cw_e[j], cb_e[i]),
                        cw_e[j + 1] - cw_e[j],
                        cb_e[i + 1] - cb_e[i],
                        fill=False,
                        hatch="xx",
                        lw=0,
                        edgecolor="0.6",
                    )
                )
            ok = np.isfinite(self.critical_C_W)
            label = (
                f"semi-critical C_W = {self.critical_C_W[ok][0]:g}"
                if self.semi_critical and ok.any()
                else "χ⊥ = 1"
            )
            if ok.any():
                ax.plot(self.critical_C_W[ok], self.C_b[ok], "w--", lw=1.8, label=label)
            ax.set_xlim(cw_e[0], cw_e[-1])
            ax.set_ylim(cb_e[0], cb_e[-1])
            ax.set_title(f"depth L = {self.depths[d]}")
            ax.set_xlabel("C_W (σ_w²)")
            if d == 0:
                ax.set_ylabel("C_b (σ_b²)")
                if ok.any():
                    ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
        if mesh is not None:
            fig.colorbar(mesh, ax=axes, label="test accuracy", fraction=0.03)
        what = "NNGP posterior" if self.method == "nngp" else "trained networks"
        fig.suptitle(f"{self.activation}: {what} (hatched: degenerate kernel)", fontsize=10, y=1.02)
        return fig


def _edges(v: np.ndarray) -> np.ndarray:
    if v.size == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])


def _critical_overlay(act: Activation, cb: np.ndarray) -> tuple[np.ndarray, bool]:
    from pdlt.theory.criticality import critical_line

    line = critical_line(act, cb)
    cw = np.where(np.atleast_1d(line.exists), np.atleast_1d(line.C_W), np.nan).astype(np.float64)
    return cw, act.homogeneous is not None


# --------------------------------------------------------------------------------------------
# validation


def _grid_values(name: str, values: object, *, allow_zero: bool) -> np.ndarray:
    try:
        arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a float or a 1-D array of floats, got {values!r}"
        ) from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D grid, got shape {arr.shape}")
    bad = ~np.isfinite(arr) | ((arr < 0) if allow_zero else (arr <= 0))
    if bad.any():
        need = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name} values must be finite and {need}, got {arr[bad][0]!r}")
    if np.any(np.diff(arr) <= 0):
        raise ValueError(f"{name} must be strictly increasing")
    return arr


def _depths(depths: object) -> tuple[int, ...]:
    vals = [depths] if isinstance(depths, numbers.Integral) else depths
    try:
        out = tuple(vals)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"depths must be an int or a sequence of ints, got {depths!r}") from None
    if not out:
        raise ValueError("depths must not be empty")
    for d in out:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1:
            raise ValueError(f"depths must be ints ≥ 1, got {d!r}")
    if len(set(out)) != len(out) or list(out) != sorted(out):
        raise ValueError(f"depths must be strictly increasing, got {out}")
    return tuple(int(d) for d in out)


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive float, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# the public function


def accuracy_map(
    activation: str | Activation = "relu",
    C_W: object = None,
    C_b: object = None,
    depths: object = DEFAULT_DEPTHS,
    X: object = None,
    y: object = None,
    X_test: object = None,
    y_test: object = None,
    *,
    method: str = "nngp",
    standardize: bool = True,
    noise: float = 1e-6,
    route: str = "auto",
    degenerate_tol: float = 1e-9,
    max_memory: int = 2**29,
    **trained: Any,
) -> AccuracyMap:
    """Test accuracy over (C_W, C_b) at each depth (Lee et al. 2017, Fig. 4; book §5.1, §6.3).

    Parameters
    ----------
    activation:
        A built-in name or an :class:`~pdlt.activations.Activation`.
    C_W, C_b:
        Increasing grids (C_W > 0, C_b ≥ 0). Default C_W ∈ [0.5, 4] (15), C_b ∈ [0, 2] (11);
        for ``method="trained"`` 8 × 5.
    depths:
        MLP depths L (L weight layers, L − 1 hidden layers), increasing; default (5, 20, 50).
    X, y, X_test, y_test:
        Training and test inputs (N, n_0) with integer labels. Default: 1,000 training and 797
        test digits of scikit-learn's bundled set (:func:`digits_split`). Targets are one-hot −
        0.1 and the predicted class is the argmax output.
    method:
        ``"nngp"``: the infinite-width Bayesian posterior mean (see the module docstring for the
        routes). ``"trained"``: real networks trained by gradient descent at every grid point
        on the sweep engine (see :func:`trained_accuracy_map` for the keyword settings).
    standardize:
        Standardise every input over its features (mean 0, variance 1), as Lee et al. do;
        this puts all inputs on one sphere, which the fast table route needs.
    noise:
        ε², relative to the mean training-kernel diagonal q̄ (ε²q̄ is added to K̃).
    route:
        ``"auto"`` (``"table"`` when all inputs have one norm, else ``"exact"``), ``"table"`` or
        ``"exact"``.
    degenerate_tol:
        Spread of the test–train correlations below which a grid point is degenerate (its
        accuracy is then the exact limit, ``chance``; see :class:`AccuracyMap`).
    max_memory:
        Bytes for one chunk of grid points' kernels (the grid is processed in chunks).

    Returns
    -------
    AccuracyMap

    Examples
    --------
    >>> am = pdlt.accuracy_map("relu", C_W=np.linspace(0.5, 4, 15), C_b=np.linspace(0, 2, 11),
    ...                        depths=(5, 20, 50))
    >>> am.accuracy.shape
    (3, 11, 15)
    >>> fig = am.plot()
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    act = _activation(activation)
    trained_grid = method == "trained"
    cw = _grid_values(
        "C_W",
        (DEFAULT_TRAINED_C_W if trained_grid else DEFAULT_C_W) if C_W is None else C_W,
        allow_zero=False,
    )
    cb = _grid_values(
        "C_b",
        (DEFAULT_TRAINED_C_B if trained_grid else DEFAULT_C_B) if C_b is None else C_b,
        allow_zero=True,
    )
    dps = _depths(depths)
    noise = _positive("noise", noise)
    degenerate_tol = _positive("degenerate_tol", degenerate_tol)
    if isinstance(max_memory, bool) or not isinstance(max_memory, numbers.Integral):
        raise TypeError(f"max_memory must be an int number of bytes, got {max_memory!r}")
    XA, yA, XB, yB = _data(X, y, X_test, y_test, standardize)
    if method == "trained":
        return trained_accuracy_map(act, cw, cb, dps, XA, yA, XB, yB, **trained)
    if trained:
        raise TypeError(
            f"unexpected keyword arguments {sorted(trained)} (they are for method='trained')"
        )
    return _nngp_map(act, cw, cb, dps, XA, yA, XB, yB, noise, route, degenerate_tol, max_memory)


def _data(X, y, X_test, y_test, standardize: bool):
    given = [v is not None for v in (X, y, X_test, y_test)]
    if not any(given):
        return digits_split()
    if not all(given):
        raise ValueError("give all of X, y, X_test, y_test, or none (for the bundled digits)")
    XA, XB = _inputs(X, "X"), _inputs(X_test, "X_test")
    if XA.shape[1] != XB.shape[1]:
        raise ValueError(f"X has {XA.shape[1]} features but X_test has {XB.shape[1]}")
    if XA.shape[0] < 2:
        raise ValueError("need at least 2 training inputs")
    yA, yB = _labels(y, XA.shape[0], "y"), _labels(y_test, XB.shape[0], "y_test")
    if standardize:
        XA, XB = standardize_examples(XA), standardize_examples(XB)
    return XA, yA, XB, yB


def _nngp_map(act, cw, cb, dps, XA, yA, XB, yB, noise, route, degenerate_tol, max_memory):
    n_classes = int(max(yA.max(), yB.max())) + 1
    Y_np = one_hot_targets(yA, n_classes)
    chance = _limit_accuracy(Y_np, yB)
    x = torch.as_tensor(np.concatenate([XA, XB]), dtype=_DT)
    NA, NB = XA.shape[0], XB.shape[0]
    sq = (x * x).sum(1) / x.shape[1]
    equal = bool(torch.all(torch.abs(sq - sq.mean()) <= _EQUAL_NORM_RTOL * sq.mean()))
    if route == "table" and not equal:
        raise ValueError(
            "route='table' needs inputs of one norm (|x|²/n_0 equal for all); pass "
            "standardize=True or route='exact'"
        )
    use_table = route == "table" or (route == "auto" and equal)
    if float(sq.min()) == 0.0 and use_table:
        raise ValueError("an input is zero; the cosine table needs nonzero inputs")
    B, W = np.meshgrid(cb, cw, indexing="ij")
    cb_t = torch.as_tensor(B.ravel(), dtype=_DT)
    cw_t = torch.as_tensor(W.ravel(), dtype=_DT)
    G = cb_t.shape[0]
    Y = torch.as_tensor(Y_np, dtype=_DT)
    yB_t = torch.as_tensor(yB)
    acc = torch.empty((len(dps), G), dtype=_DT)
    spread = torch.empty_like(acc)
    degen = torch.empty((len(dps), G), dtype=torch.bool)
    kerr = np.zeros(len(dps))
    # per grid point: K̃, K_BA, the Cholesky factor and a few temporaries
    per_point = 8 * (3 * NA * NA + 2 * NB * NA)
    chunk = max(1, min(G, int(max_memory) // per_point))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if use_table:
            q0 = float(sq.mean())
            tables, Wm, s_nodes = _build_tables(act, cw_t, cb_t, x, NA, dps, q0)
            for d, L in enumerate(dps):
                q, T, D, trunc = tables[L]
                kerr[d] = _table_error(T, D, s_nodes, q) + float(trunc.max())
                for lo in range(0, G, chunk):
                    sl = slice(lo, lo + chunk)
                    # (P, C): one sparse product interpolates every entry of the chunk
                    # then one transposing copy, so every grid point's matrices are contiguous
                    Kall = (Wm @ torch.cat([T[sl], D[sl]], 1).T.contiguous()).T.contiguous()
                    A = Kall[:, : NA * NA].view(-1, NA, NA)
                    A.diagonal(dim1=1, dim2=2).copy_((q[sl] * (1 + noise))[:, None].expand(-1, NA))
                    K_BA = Kall[:, NA * NA :].view(-1, NB, NA)
                    a, s, g = _posterior_accuracy(A, K_BA, Y, yB_t, degenerate_tol, q[sl])
                    acc[d, sl], spread[d, sl], degen[d, sl] = a, s, g
        else:
            for lo in range(0, G, chunk):
                sl = slice(lo, lo + chunk)
                Ks = _exact_kernels(act, cw_t[sl], cb_t[sl], x, dps)
                for d, L in enumerate(dps):
                    K = Ks[L]
                    A = K[:, :NA, :NA].clone()
                    q = torch.diagonal(A, dim1=1, dim2=2).mean(1)
                    A.diagonal(dim1=1, dim2=2).add_((noise * q)[:, None])
                    a, s, g = _posterior_accuracy(A, K[:, NA:, :NA], Y, yB_t, degenerate_tol, q)
                    acc[d, sl], spread[d, sl], degen[d, sl] = a, s, g
    accuracy = torch.where(degen, torch.full_like(acc, chance), acc)
    shape = (len(dps), cb.size, cw.size)
    crit, semi = _critical_overlay(act, cb)
    return AccuracyMap(
        activation=act.name,
        method="nngp",
        C_W=cw,
        C_b=cb,
        depths=dps,
        accuracy=accuracy.numpy().reshape(shape),
        degenerate=degen.numpy().reshape(shape),
        spread=spread.numpy().reshape(shape),
        chance=chance,
        critical_C_W=crit,
        semi_critical=semi,
        kernel_error=kerr,
        info={
            "route": "table" if use_table else "exact",
            "noise": noise,
            "n_train": NA,
            "n_test": NB,
            "degenerate_tol": degenerate_tol,
        },
    )


def _build_tables(act, cw_t, cb_t, x, NA, dps, q0):
    """Cosine tables for every depth on the data's range of s, and the sparse (P, 2M)
    interpolation matrix for the P = N_A² + N_B N_A entries of K̃ and K_BA (row-major, K̃
    first; K̃'s diagonal and upper triangle get empty rows: the diagonal is q exactly and the
    Cholesky factorization reads the lower triangle only)."""
    xa = x[:NA]
    gram = torch.cat([(xa @ xa.T).reshape(-1), (x[NA:] @ xa.T).reshape(-1)])
    s = _s_of(gram / (x.shape[1] * q0))
    keep = torch.ones_like(s, dtype=torch.bool)
    keep[: NA * NA] = torch.tril(torch.ones(NA, NA, dtype=torch.bool), diagonal=-1).reshape(-1)
    s_keep = s[keep]
    lo, hi = float(s_keep.min()), float(s_keep.max())
    if hi - lo < 1e-6:
        lo, hi = max(0.0, lo - 1e-3), min(1.0, hi + 1e-3)
    closed = (0, 0) in act.closed_forms and (1, 1) in act.closed_forms
    M = TABLE_NODES if closed else MEHLER_TABLE_NODES
    s_nodes = torch.linspace(lo, hi, M, dtype=_DT)
    tables = _table_kernels(act, cw_t, cb_t, q0, s_nodes, dps)
    i, _, w = _hermite_weights(torch.clamp(s_keep, lo, hi), s_nodes)
    counts = keep.to(torch.int64) * 4
    crow = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)])
    col = torch.stack([i, i + M, i + 1, i + 1 + M], 1).reshape(-1)  # values, then dK/ds
    val = torch.stack(w, 1).reshape(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        Wm = torch.sparse_csr_tensor(crow, col, val, size=(s.shape[0], 2 * M))
    return tables, Wm, s_nodes


def _table_error(T: Tensor, D: Tensor, s_nodes: Tensor, q: Tensor) -> float:
    """Max relative error of interpolating from every other node at the nodes in between: an
    over-estimate (the table used has twice the resolution, and cubic error goes like h⁴)."""
    coarse_T, coarse_D = T[:, ::2], D[:, ::2]
    mid = s_nodes[1::2]
    i, _, w = _hermite_weights(mid, s_nodes[::2])
    est = _interpolate(coarse_T, coarse_D, i, w)
    err = (est - T[:, 1::2]).abs().amax(1) / torch.clamp(q.abs(), min=1e-300)
    return float(torch.nan_to_num(err, nan=math.inf).max())
