"""What the optimal aspect ratio means on real networks (book App. A.4, B.4).

At a fixed parameter budget, networks of different depth-to-width ratio r = L/n are trained on
the same task and their test loss is plotted against r, with the theory's r* (eqs. A.73, B.36,
:func:`pdlt.optimal_aspect_ratio`) marked. The book's r* maximizes the NLO mutual information
between groups of output neurons at initialization: below it a network is too shallow for
representation learning, above it the finite-width fluctuations ∝ r take over. It is a
heuristic for where the best networks are, not a prediction of the test loss; the experiment
shows where the trained networks' optimum falls relative to it, and is not asserted to agree.

Every network is set up as the theory prescribes: critical initialization (with ``skip``: the
residual critical point, B.20–B.21), per-layer learning rates of the learning-rate equivalence
principle (:func:`pdlt.learning_rates`, eqs. 9.94–9.95), so that one global η serves every
depth, and full-batch gradient descent on the MSE to one-hot − 0.1 targets
(:func:`pdlt.train_ensembles`) of scikit-learn's bundled 8×8 digits (offline), each input
standardized to |x|² = n_0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pdlt import _validation
from pdlt.network import MLP

DEFAULT_RATIOS = (0.025, 0.06, 0.15, 0.3, 0.6, 1.0)
N_CLASSES = 10  # the digits


@dataclass(frozen=True)
class AspectRatioExperiment:
    """Test loss of trained networks of (nearly) equal parameter count across aspect ratios.

    Attributes
    ----------
    activation, skip:
        The activation and the residual γ of every network.
    budget:
        The requested number of parameters.
    depths, widths:
        (R,) L and n of each network shape, from shallow-wide to deep-narrow.
    aspect_ratios:
        (R,) L/n of each shape (the requested ratios rounded to integer L, n).
    n_params:
        (R,) the exact parameter count of each shape (within a few % of ``budget``).
    test_loss, test_accuracy, train_loss:
        (R, M) per network after training: ½ mean over inputs of |z − y|² on the test and the
        training set, and the test accuracy (argmax). NaN for a network that diverged.
    initial_test_loss:
        (R, M) the same at initialization.
    r_star:
        The theory's optimal aspect ratio (4/(20 + 3n_L))/ν(γ), or None where ν(γ) is not
        available (then ``note`` says why).
    nu:
        The ν used for r*.
    C_b, C_W:
        The (residual) critical initialization.
    steps, learning_rate, n_train, n_test, seed:
        How the networks were trained (``learning_rate`` is η for the mean loss).
    note:
        Where the theory gives no r*, or what else the reader should know.
    """

    activation: str
    skip: float
    budget: int
    depths: np.ndarray
    widths: np.ndarray
    aspect_ratios: np.ndarray
    n_params: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    train_loss: np.ndarray
    initial_test_loss: np.ndarray
    r_star: float | None
    nu: float | None
    C_b: float
    C_W: float
    steps: int
    learning_rate: float
    n_train: int
    n_test: int
    seed: int
    note: str = ""

    @property
    def n_networks(self) -> int:
        return self.test_loss.shape[1]

    @property
    def best_ratio(self) -> float:
        """The aspect ratio with the lowest mean test loss."""
        return float(self.aspect_ratios[int(np.nanargmin(_mean_err(self.test_loss)[0]))])

    def to_frame(self) -> pd.DataFrame:
        """One row per shape: L, n, L/n, parameters, test loss and accuracy (mean ± standard
        error over the networks), the training loss, and how many diverged."""
        tl, tle = _mean_err(self.test_loss)
        acc, acce = _mean_err(self.test_accuracy)
        tr, _ = _mean_err(self.train_loss)
        return pd.DataFrame(
            {
                "depth L": self.depths,
                "width n": self.widths,
                "L/n": self.aspect_ratios,
                "parameters": self.n_params,
                "test loss": tl,
                "± error": tle,
                "test accuracy": acc,
                "± error ": acce,
                "train loss": tr,
                "initial test loss": _mean_err(self.initial_test_loss)[0],
                "diverged": (~np.isfinite(self.test_loss)).sum(1),
            }
        )

    def plot(self, ax=None):
        """Test loss against L/n (log axis) with error bars, r* as a vertical line."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.6))
        tl, tle = _mean_err(self.test_loss)
        ax.errorbar(self.aspect_ratios, tl, tle, fmt="o-", capsize=3, label="trained networks")
        if self.r_star is not None:
            ax.axvline(self.r_star, color="C3", ls="--", label=f"r* = {self.r_star:.3g}")
        ax.set_xscale("log")
        ax.set(
            xlabel="aspect ratio r = L/n",
            ylabel="test loss (MSE)",
            title=f"{self.activation}, γ = {self.skip:g}, ≈{self.budget:,} parameters",
        )
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        return ax


def _mean_err(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over the networks (axis 1) that did not diverge (NaN rows out)."""
    k = np.isfinite(a).sum(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-diverged shape stays NaN
        mean = np.nanmean(a, axis=1)
        err = np.nanstd(a, axis=1, ddof=1) / np.sqrt(k)
    err[k < 2] = np.nan
    return mean, err


def shapes_for_ratios(
    ratios: Sequence[float], budget: int, input_dim: int, output_dim: int
) -> list[tuple[int, int]]:
    """(L, n) for each aspect ratio at a parameter budget: L = max(2, round(r n)) with n from
    L = r n and the parameter count = budget (as :func:`pdlt.recommend`), then the integer
    width whose count is closest to the budget. Shapes that coincide after rounding appear once,
    ordered by L/n."""
    from pdlt.theory.design import parameter_count, width_at_aspect_ratio

    shapes = set()
    for r in ratios:
        L = max(2, round(r * width_at_aspect_ratio(r, budget, input_dim, output_dim)))
        n = min(
            (max(1, w) for w in _near_widths(L, budget, input_dim, output_dim)),
            key=lambda w: abs(parameter_count(L, w, input_dim, output_dim) - budget),
        )
        shapes.add((L, n))
    return sorted(shapes, key=lambda s: s[0] / s[1])


def _near_widths(L: int, budget: int, n0: int, nL: int) -> tuple[int, int]:
    from pdlt.theory.design import _width_for_depth

    w = _width_for_depth(budget, L, n0, nL)
    return math.floor(w), math.ceil(w)


def aspect_ratio_experiment(
    activation: str,
    n_params: int = 6_000,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    *,
    skip: float = 0.0,
    n_networks: int = 4,
    steps: int = 500,
    learning_rate: float = 1.0,
    n_train: int = 256,
    n_test: int = 512,
    seed: int = 0,
    device: str = "cpu",
    progress: bool | None = None,
) -> AspectRatioExperiment:
    """Train networks of (nearly) equal parameter count across aspect ratios r = L/n on the
    digits and record their test loss, beside the theory's r* (book eqs. A.73, B.36).

    Parameters
    ----------
    activation:
        A built-in activation with a critical point (the initialization and the learning-rate
        rules need one).
    n_params:
        The parameter budget (weights and biases, 64 inputs, 10 outputs).
    ratios:
        Requested aspect ratios L/n (> 0); each becomes integer (L, n) within the budget
        (:func:`shapes_for_ratios`; the exact counts are in the result).
    skip:
        Residual γ (|γ| < 1) on every hidden-to-hidden layer (book eq. B.3).
    n_networks:
        Networks per shape (independent seeds): the error bars.
    steps, learning_rate:
        Full-batch gradient-descent steps, and η for the *mean* loss over the training set; the
        per-layer λ_b, λ_W of :func:`pdlt.learning_rates` make one η fit every depth. With
        them Θ^{(L)} ≈ 2 on an input with |x|² = n_0 for every shape and every built-in critical
        activation (tanh 1.5–1.8, ReLU, GELU, SWISH 2.0; :func:`pdlt.ntk`), so the default
        η = 1 stays below the linearized stability bound 2/λ_max(Θ/N) ≥ 2/mean diag Θ ≈ 1.
    n_train, n_test:
        Digits for training and testing (1,797 in all; disjoint, a fixed shuffle by ``seed``).
    seed, device, progress:
        As for :func:`pdlt.train_ensembles`.

    Examples
    --------
    >>> res = pdlt.aspect_ratio_experiment("tanh", n_params=6000)
    >>> res.to_frame()[["L/n", "test loss", "± error"]]
    >>> res.r_star, res.best_ratio
    """
    from pdlt.experiment.accuracy_map import digits_split, one_hot_targets
    from pdlt.experiment.train import train_ensemble
    from pdlt.theory.criticality import critical_point
    from pdlt.theory.design import optimal_aspect_ratio, parameter_count
    from pdlt.theory.ntk_criticality import learning_rates

    if not isinstance(activation, str):
        raise TypeError(f"activation must be a built-in name, got {activation!r}")
    budget = _validation.integer("n_params", n_params, min=200)
    r = _validation.real_array("ratios", ratios, min=0.0, min_inclusive=False, max_ndim=1)
    gamma = _validation.real("skip", skip)
    M = _validation.integer("n_networks", n_networks, min=2)
    steps = _validation.integer("steps", steps, min=1)
    eta = _validation.positive("learning_rate", learning_rate)
    n_train = _validation.integer("n_train", n_train, min=10, max=1500)
    n_test = _validation.integer("n_test", n_test, min=10)
    if n_train + n_test > 1797:
        raise ValueError(f"n_train + n_test must be ≤ 1797 (the digits), got {n_train + n_test}")
    seed = _validation.seed("seed", seed)
    cp = critical_point(activation, skip=gamma)  # raises for |γ| ≥ 1
    if not cp.exists:
        raise ValueError(
            f"{activation} has no critical initialization ({cp.note}); the experiment sets every "
            "network at criticality: use an activation with one"
        )
    X, y, Xt, yt = digits_split(n_train, n_test, seed=seed)
    Y, Yt = one_hot_targets(y, N_CLASSES), one_hot_targets(yt, N_CLASSES)
    n0 = X.shape[1]
    shapes = shapes_for_ratios(r.ravel().tolist(), budget, n0, N_CLASSES)
    nu, note = cp.vertex_growth, ""
    try:
        r_star = optimal_aspect_ratio(activation, N_CLASSES, skip=gamma)
    except ValueError as exc:  # no ν for this activation (ELU): the curve without r*
        r_star, note = None, f"no r*: {exc}"
    input_norm = 1.0  # |x|² = n_0 after standardization
    out = {k: np.full((len(shapes), M), np.nan) for k in ("test", "acc", "train", "init")}
    for i, (L, n) in enumerate(shapes):
        lr = learning_rates(activation, L, C_W=cp.C_W, C_b=cp.C_b, input_norm=input_norm)
        net = MLP(
            activation, depth=L, width=n, input_dim=n0, output_dim=N_CLASSES, C_b=cp.C_b,
            C_W=cp.C_W, lambda_b=lr.lambda_b, lambda_W=lr.lambda_W, skip=gamma,
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # divergence is recorded as NaN
            ens = train_ensemble(
                net, X, Y, steps=steps, learning_rate=eta / n_train, n_networks=M,
                seed=seed + 1000 * i, X_test=np.concatenate([Xt, X]), device=device,
                progress=progress,
            )  # fmt: skip
        for row, k in ((0, "init"), (-1, "test")):
            z = ens.predictions[row][:, : len(Xt)]  # (M, N_test, 10)
            out[k][i] = 0.5 * ((z - Yt) ** 2).sum(-1).mean(-1)
        z = ens.predictions[-1]
        out["acc"][i] = (z[:, : len(Xt)].argmax(-1) == yt).mean(-1)
        out["train"][i] = 0.5 * ((z[:, len(Xt) :] - Y) ** 2).sum(-1).mean(-1)
        out["acc"][i][ens.diverged] = np.nan
    if gamma != 0.0:
        note = (note + " " if note else "") + (
            "Learning rates are the plain-MLP rule (the residual NTK's per-layer shares are not "
            "derived here)."
        )
    L_arr = np.array([s[0] for s in shapes])
    n_arr = np.array([s[1] for s in shapes])
    return AspectRatioExperiment(
        activation=activation,
        skip=gamma,
        budget=budget,
        depths=L_arr,
        widths=n_arr,
        aspect_ratios=L_arr / n_arr,
        n_params=np.array([parameter_count(L, n, n0, N_CLASSES) for L, n in shapes]),
        test_loss=out["test"],
        test_accuracy=out["acc"],
        train_loss=out["train"],
        initial_test_loss=out["init"],
        r_star=r_star,
        nu=nu,
        C_b=float(cp.C_b),
        C_W=float(cp.C_W),
        steps=steps,
        learning_rate=eta,
        n_train=n_train,
        n_test=len(Xt),
        seed=seed,
        note=note,
    )
