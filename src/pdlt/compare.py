"""Theory beside measurement: one table, z-scores, and a pass/fail verdict."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

from pdlt._tables import entries


class _Result(Protocol):
    statistics: tuple[str, ...]


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

    Examples
    --------
    >>> table = pdlt.compare(pdlt.kernel(net, x), pdlt.measure(net, x, 500))
    >>> table.groupby("layer").z_score.apply(lambda z: z.abs().max())
    """
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
