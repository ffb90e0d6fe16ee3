"""Theory beside measurement: one table, z-scores, and the one agreement rule.

:func:`compare` pairs a theory result with a measurement entry by entry; :func:`agreement`
decides, for any such table, whether each entry agrees within the statistical error plus the
size of the order the theory neglects (:data:`ALLOWANCES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from pdlt._tables import entries
from pdlt.experiment.measure import Measurement
from pdlt.network import MLP


class _Result(Protocol):
    statistics: tuple[str, ...]
    net: MLP
    x: np.ndarray


# Statistics the leading-order theory gives independently of the hidden widths n_1 … n_{L−1}:
# their theory may be compared with a measurement at any width (that is how 1/n is seen). Every
# other statistic is width-specific, and the networks must then agree in their widths too.
WIDTH_FREE = frozenset({"K", "Theta"})
# Statistics of the NTK depend on the learning-rate multipliers; the others do not.
NTK_STATISTICS = frozenset({"Theta", "A", "B", "D", "F"})
INPUT_RTOL = 1e-9  # inputs are the same when equal to this relative tolerance (float64 copies)


def _activation_spec(net: MLP) -> object:
    """What identifies an activation: name and parameters of a built-in, the function object of
    a user callable (two lambdas are never known to be equal)."""
    act = net.activation
    return (act.name, tuple(sorted(act.params.items()))) if act.builtin else ("callable", act.fn)


def network_differences(a: MLP, b: MLP, statistics: tuple[str, ...] = ()) -> list[str]:
    """How two network specs differ in what ``statistics`` depend on, one line per field
    (empty when they describe the same networks for those statistics)."""
    out = []
    if _activation_spec(a) != _activation_spec(b):
        out.append(f"activation: {a.activation!r} vs {b.activation!r}")
    fields = ["depth", "input_dim", "C_b", "C_W", "skip"]
    if NTK_STATISTICS.intersection(statistics):
        fields += ["lambda_b", "lambda_W"]
    for f in fields:
        if getattr(a, f) != getattr(b, f):
            out.append(f"{f}: {getattr(a, f)} vs {getattr(b, f)}")
    if not WIDTH_FREE.issuperset(statistics) and a.widths[1:-1] != b.widths[1:-1]:
        out.append(f"hidden widths n_1..n_(L-1): {a.widths[1:-1]} vs {b.widths[1:-1]}")
    return out


def input_differences(a: np.ndarray, b: np.ndarray) -> list[str]:
    """How two input sets differ (empty when equal to ``INPUT_RTOL``)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return [f"inputs x: shape {a.shape} vs {b.shape}"]
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)), 1e-300)
    gap = float(np.abs(a - b).max(initial=0.0))
    if gap > INPUT_RTOL * scale:
        rows = np.flatnonzero(np.abs(a - b).max(axis=1) > INPUT_RTOL * scale)
        return [f"inputs x: rows {rows.tolist()} differ (max |Δx| = {gap:.3g})"]
    return []


def _check_pair(theory: object, measured: object) -> None:
    if not isinstance(measured, Measurement):
        raise TypeError(
            "compare(theory, measured): the second argument must be a Measurement (from "
            f"pdlt.measure), got {type(measured).__name__}"
        )
    if isinstance(theory, Measurement) or not all(
        hasattr(theory, a) for a in ("statistics", "net", "x")
    ):
        raise TypeError(
            "compare(theory, measured): the first argument must be a theory result (from "
            f"pdlt.kernel, pdlt.ntk, pdlt.four_point_vertex, ...), got {type(theory).__name__}"
        )


def compare(
    theory: _Result, measured: _Result, *, statistics: tuple[str, ...] | None = None
) -> pd.DataFrame:
    """Pair every statistic a theory result and a measurement both hold.

    Returns a DataFrame with columns ``statistic, layer, a, b`` (or ``index``), ``theory``,
    ``measured``, ``error`` (the measurement's standard error), ``z_score`` =
    (measured − theory)/error and ``relative`` = (measured − theory)/|theory|. The z-score
    includes no allowance for the finite-width corrections the theory neglects: at width n,
    leading-order theory is off by O(1/n) (O(1/n²) for 1/n results), which a z-score grows
    with as the ensemble grows.

    The two must describe the same thing: the same activation, depth, C_b, C_W (and λ_b, λ_W
    for NTK statistics), the same hidden widths (except for the width-free leading-order
    statistics ``K`` and ``Theta``, whose theory is compared with measurements at any width),
    and the same inputs (to relative 1e-9). Otherwise ValueError says what differs.

    Raises
    ------
    TypeError
        If ``measured`` is not a :class:`~pdlt.experiment.measure.Measurement` or ``theory`` is
        not a theory result.
    ValueError
        If they describe different networks or inputs, or share no statistic.

    Examples
    --------
    >>> table = pdlt.compare(pdlt.kernel(net, x), pdlt.measure(net, x, 500))
    >>> table.groupby("layer").z_score.apply(lambda z: z.abs().max())
    """
    _check_pair(theory, measured)
    common = [s for s in theory.statistics if s in measured.statistics]
    if statistics is not None:
        missing = [s for s in statistics if s not in common]
        if missing:
            raise ValueError(f"statistics {missing} are not in both results; common ones: {common}")
        common = list(statistics)
    if not common:
        raise ValueError(
            f"nothing to compare: theory has {theory.statistics}, measurement has {measured.statistics}"
        )
    diffs = network_differences(theory.net, measured.net, tuple(common))
    diffs += input_differences(theory.x, measured.x)
    if diffs:
        raise ValueError(
            "compare: the theory and the measurement describe different networks or inputs "
            "(theory vs measured): " + "; ".join(diffs)
        )
    frames = []
    for name in common:
        th = np.asarray(getattr(theory, name))
        ms = np.asarray(getattr(measured, name))
        err = np.asarray(getattr(measured, name + "_err"))
        if th.shape != ms.shape:
            raise ValueError(
                f"{name}: theory shape {th.shape} != measured shape {ms.shape}; "
                "were they computed for the same network and inputs?"
            )
        cols, t = entries(th)
        _, m = entries(ms)
        _, e = entries(err)
        diff = m - t
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(e > 0, diff / np.where(e > 0, e, 1), np.where(diff == 0, 0.0, np.inf))
            # relative error is meaningless where the theory value is zero up to round-off
            tiny = np.abs(t) <= 1e-12 * max(float(np.abs(t).max(initial=0.0)), 1e-300)
            rel = np.where(tiny, np.nan, diff / np.abs(np.where(tiny, 1, t)))
        frame = pd.DataFrame({"statistic": name, **cols})
        frame["theory"], frame["measured"], frame["error"] = t, m, e
        frame["z_score"], frame["relative"] = z, rel
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# --- the agreement rule ---------------------------------------------------------------------

K_SIGMA = 4.0  # standard errors allowed: |z| > 4 has probability 6e-5 per Gaussian entry


@dataclass(frozen=True)
class Allowance:
    """The neglected-order term ``c·(ℓ/n)^power·scale`` of one statistic (see :func:`agreement`).

    ``why`` says which order the theory neglects and where ``c`` comes from.
    """

    c: float
    power: int
    why: str


_ONE_OVER_N = (
    "a 1/n result (a coefficient of 1/n, or a quantity that is itself O(ℓ/n)): the theory is its "
    "leading order, the neglected term is O(1/n²) in the network, i.e. a relative O(ℓ/n) of the "
    "1/n result; c = 2 covers the measured next-order coefficients (≈ 1–2 for the book's classes, "
    "e.g. A at ℓ = 4, n = 32 for ReLU is 14 % ≈ 1.1·ℓ/n above its leading order)"
)
_LEADING = (
    "leading (infinite-width) order: the measured value differs by the 1/n correction, "
    "e.g. E[zz] = K + G^{1}/n + O(1/n²) (4.104), with |G^{1(ℓ)}| ≲ ℓ·max|K^{(ℓ)}| (5.110)"
)

#: c and the power of ℓ/n per statistic, for ``|measured − theory| ≤ k·error + c·(ℓ/n)^power·scale``.
ALLOWANCES: dict[str, Allowance] = {
    "K": Allowance(1.0, 1, _LEADING),
    "G": Allowance(
        1.0,
        2,
        "next-to-leading order K + G^{1}/n (4.104), (4.115): the neglected term is O(1/n²), "
        "of size (ℓ/n)²·K",
    ),
    "Theta": Allowance(
        0.15,
        1,
        "leading order Θ = H^{0} (9.4): the neglected mean correction H^{1}/n (9.3) has a "
        "coefficient ≲ 0.12·ℓ·Θ in the book's classes (measured; tests/test_ntk_mc.py)",
    ),
    **{
        s: Allowance(2.0, 1, _ONE_OVER_N)
        for s in (
            "V",
            "K1",
            "A",
            "B",
            "D",
            "F",
            "excess_kurtosis",
            "kernel_shift",
            "ntk_relative_variance",
            "P",
            "Q",
            "R",
            "S",
            "T",
            "U",
            "Theta1",
            "ntk_change",
        )
    },
    "correlation": Allowance(
        3.0,
        1,
        "leading order c = K_12/√(K_11 K_22) off criticality: its 1/n correction grows like ℓ/n "
        "times q = 1 − c (ordered) or c (chaotic), measured n|Δq/q| ≈ 2.5ℓ for GELU ordered at "
        "C_b = 0.3; pass scale = |q|",
    ),
    **{
        s: Allowance(
            1.0,
            1,
            _LEADING + "; for trained outputs pass layer = L, scale = the "
            "prediction's largest value (book §10.2, §∞.2)",
        )
        for s in ("trained_mean", "trained_variance")
    },
}


def comparison_frame(
    statistic: str,
    layer,
    theory,
    measured,
    error,
    *,
    scale=None,
) -> pd.DataFrame:
    """A comparison table, shaped as :func:`compare`'s, for a statistic derived by hand (a ratio
    of measured statistics, a trained ensemble's output): columns ``statistic, layer, theory,
    measured, error, z_score`` (and ``scale`` when given), ready for :func:`agreement`."""
    frame = pd.DataFrame(
        {"statistic": statistic, "layer": layer, "theory": theory, "measured": measured}
    )
    frame["error"] = np.broadcast_to(np.asarray(error, dtype=float), len(frame))
    diff = frame.measured - frame.theory
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["z_score"] = np.where(
            frame.error > 0, diff / frame.error, np.where(diff == 0, 0.0, np.inf)
        )
    if scale is not None:
        frame["scale"] = np.broadcast_to(np.asarray(scale, dtype=float), len(frame))
    return frame


def _hidden_width(width: int | MLP) -> float:
    if isinstance(width, MLP):
        hidden = width.widths[1:-1]
        return float(min(hidden)) if hidden else float(width.widths[0])
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)):
        raise TypeError(f"width must be an int or an MLP, got {width!r}")
    if width < 1:
        raise ValueError(f"width must be ≥ 1, got {width}")
    return float(width)


def allowance(table: pd.DataFrame, width: int | MLP, *, k: float = K_SIGMA) -> pd.Series:
    """The bound ``k·error + c·(ℓ/n)^p·scale`` per row of a comparison table.

    ``table`` has columns ``statistic``, ``layer``, ``theory``, ``error`` (as :func:`compare`
    gives) and optionally ``scale``; without it, scale is max|theory| over the entries of the
    same statistic and layer (so off-diagonal entries near zero get the size of the layer's
    correction, not zero). ``c`` and ``p`` come from :data:`ALLOWANCES`. ``n`` is ``width``, or
    the smallest hidden width of an MLP.
    """
    n = _hidden_width(width)
    unknown = sorted(set(table.statistic) - set(ALLOWANCES))
    if unknown:
        raise ValueError(f"no agreement rule for statistics {unknown}; known: {sorted(ALLOWANCES)}")
    if "scale" in table:
        scale = table.scale.abs()
    else:
        scale = table.groupby(["statistic", "layer"]).theory.transform(lambda t: t.abs().max())
    c = table.statistic.map(lambda s: ALLOWANCES[s].c)
    power = table.statistic.map(lambda s: ALLOWANCES[s].power)
    return k * table.error + c * (table.layer / n) ** power * scale


def agreement(table: pd.DataFrame, width: int | MLP, *, k: float = K_SIGMA) -> pd.Series:
    """Whether each entry of a comparison table agrees: the one agreement rule of pdlt,

        |measured − theory| ≤ k·error + c·(ℓ/n)^p·scale,

    the statistical error (k standard errors of the measurement) plus the size of the order the
    theory neglects at layer ℓ and width n. For a leading-order (infinite-width) statistic the
    neglected term is O(ℓ/n) relative (p = 1); for a 1/n result it is O(1/n²), which is
    (ℓ/n)·scale when the 1/n result itself sets the scale; for the next-to-leading metric G it
    is (ℓ/n)²·K (p = 2). ``c`` per statistic and its reason are in :data:`ALLOWANCES`; see
    :func:`allowance` for ``scale`` and ``n``.

    Examples
    --------
    >>> table = pdlt.compare(pdlt.kernel(net, x), ms)
    >>> bool(pdlt.agreement(table, net).all())
    """
    return (table.measured - table.theory).abs() <= allowance(table, width, k=k)
