"""Long tables of per-layer arrays (shared by results, measurements and comparisons)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd


def entries(arr: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Index columns and values of a per-layer array (layer first).

    Symmetric-looking (L, N, N) arrays give columns ``layer, a, b`` with a ≤ b; any other shape
    gives ``layer, index`` with the remaining indices as a tuple string.
    """
    arr = np.asarray(arr)
    L = arr.shape[0]
    if arr.ndim == 3 and arr.shape[1] == arr.shape[2]:
        a, b = np.triu_indices(arr.shape[1])
        cols = {
            "layer": np.repeat(np.arange(1, L + 1), a.size),
            "a": np.tile(a, L),
            "b": np.tile(b, L),
        }
        return cols, arr[:, a, b].reshape(-1)
    idx = np.indices(arr.shape).reshape(arr.ndim, -1)
    cols = {
        "layer": idx[0] + 1,
        "index": np.array([str(tuple(int(i) for i in t)) for t in idx[1:].T], dtype=object),
    }
    return cols, arr.reshape(-1)


def long_frame(arrays: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per layer and index, one column per array (all of one shape)."""
    cols: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        index, values = entries(arr)
        if not cols:
            cols.update(index)
        cols[name] = values
    return pd.DataFrame(cols)
