"""Theory beside measurement: one table, z-scores, and a pass/fail verdict."""

from __future__ import annotations

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
    fields = ["depth", "input_dim", "C_b", "C_W"]
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
