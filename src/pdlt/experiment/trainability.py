"""The trainability phase diagram (Schoenholz et al. 2016; book ch. 5, 9).

Deep tanh networks are trained on a real classification data set over a grid of C_W × depth at
fixed C_b; the training accuracy after a fixed number of steps is drawn as a heat map, with the
theory's order–chaos boundary (χ_⊥ = 1) and the depth 6·ξ_⊥ overlaid, where
ξ_⊥ = 1/|log χ_c| is the depth scale over which two inputs' correlation relaxes to its fixed
point (book §5.1; the papers' ξ_c). Networks deeper than a few ξ_⊥ lose the information that
distinguishes their inputs (ordered side) or scramble it (chaotic side), and stop training.

Each depth is one sweep cell (:mod:`pdlt.experiment.sweep`), so the diagram resumes after an
interruption and scales out to processes or a Dask cluster. Inside a cell, the networks of every
C_W train together as one batched program: networks that differ only in C_W differ only in their
initial scale, so they share one draw of standard normals (:func:`trainability_row`).

Conventions: inputs are centred and scaled to |x|² = n_0, so K^{(1)} = C_b + C_W as in
:func:`pdlt.theory.criticality.criticality`; the learning rates follow the book's depth scaling
at criticality, λ_b = λ_W = 1/L (book §9.4), so that Θ^{(L)} stays O(1) along the critical line
and the same η serves every depth; ``learning_rate`` is η for the *mean* loss over the training
set (η_book = learning_rate / n_train).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdlt import _validation
from pdlt.experiment.sweep import SweepResult, sweep

DEFAULT_C_W = tuple(np.round(np.linspace(0.5, 4.0, 12), 4).tolist())
DEFAULT_DEPTHS = (4, 8, 16, 24, 32, 48, 64, 96)
DEFAULT_STORE = Path("pdlt-phase-diagram")
# 128 digits rather than 256: the full default grid then trains in ~40 s on 2 cores (the work is
# GEMM-bound, so halving the batch halves it), and the picture is the same — 94 % of cells agree
# with "depth ≤ 6ξ_⊥" at 128 digits against 93 % at 256 (measured side by side, issue 11).
DEFAULT_SETTINGS: dict[str, Any] = {
    "C_b": 0.05,
    "width": 64,
    "steps": 300,
    "learning_rate": 2.0,
    "n_train": 128,
    "n_networks": 2,
    "loss": "cross_entropy",
}


# --------------------------------------------------------------------------------------------
# data


def normalize_inputs(X: np.ndarray) -> np.ndarray:
    """Centre the features, then scale every input to |x|² = n_0 (so K^{(1)} = C_b + C_W)."""
    X = np.asarray(X, dtype=np.float64)
    X = X - X.mean(axis=0)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("an input is constant (equal to the feature mean); it has no direction")
    return X * math.sqrt(X.shape[1]) / norms


def digits(n_train: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_train`` images of scikit-learn's bundled 8×8 digits (offline), normalized, with
    integer labels; the subset is a fixed shuffle (``seed``), the same for every cell."""
    from sklearn.datasets import load_digits

    data = load_digits()
    idx = np.random.default_rng(seed).permutation(len(data.target))[:n_train]
    return normalize_inputs(data.data[idx]), data.target[idx].astype(np.int64)


def _labels(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"y must be {n} integer labels (or one-hot rows), got shape {np.shape(y)}")
    if not np.all(np.isfinite(y)) or np.any(y < 0) or np.any(y != np.round(y)):
        raise ValueError("y must hold non-negative integer class labels")
    return y.astype(np.int64)


# --------------------------------------------------------------------------------------------
# one cell: a depth, every C_W


def _data(X: np.ndarray | None, y: np.ndarray | None, n_train: int):
    if X is None:
        return digits(n_train)
    X = np.asarray(X, dtype=np.float64)[:n_train]
    return X, _labels(np.asarray(y)[:n_train], X.shape[0])


def trainability_row(
    depth: int,
    *,
    C_W: Sequence[float],
    seed: int,
    C_b: float,
    width: int,
    steps: int,
    learning_rate: float,
    n_train: int,
    n_networks: int,
    loss: str,
    X: np.ndarray | None = None,
    y: np.ndarray | None = None,
    device: str = "cpu",
) -> dict:
    """Train ``n_networks`` tanh networks at every C_W of a row, one depth, as one batched
    program (:func:`pdlt.experiment.train.train_ensembles`: networks with different C_W differ
    only in their initial scale √(C_W/n_{ℓ−1}), so they share their standard normals and one
    forward/backward pass per step). Returns per-C_W lists of the training accuracy.

    A pure function of its arguments: the data are the digits subset (or ``X``, ``y``), the
    networks are drawn from ``seed`` — network m at C_W is the one :func:`trainability_cell`
    (and :func:`pdlt.train_ensemble`) draws there. Diverged networks count at chance accuracy.
    """
    import warnings

    import torch

    from pdlt.experiment.train import train_ensembles
    from pdlt.network import MLP

    X, labels = _data(X, y, n_train)
    n_classes = int(labels.max()) + 1
    Y = np.eye(n_classes)[labels]
    nets = [
        MLP(
            "tanh",
            depth=int(depth),
            width=int(width),
            input_dim=X.shape[1],
            output_dim=n_classes,
            C_W=float(c),
            C_b=float(C_b),
            lambda_b=1.0 / depth,
            lambda_W=1.0 / depth,
        )
        for c in C_W
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # divergence is a result here
        ensembles = train_ensembles(
            nets,
            X,
            Y,
            steps=int(steps),
            learning_rate=float(learning_rate) / X.shape[0],
            loss=loss,
            n_networks=int(n_networks),
            seed=int(seed),
            dtype=torch.float32,
            device=device,
            progress=False,
        )
    chance = 1.0 / n_classes
    rows: dict[str, list] = {
        k: [] for k in ("accuracy", "accuracy_min", "accuracy_max", "initial_accuracy", "diverged")
    }
    for ens in ensembles:
        acc = np.where(ens.diverged, chance, ens.train_accuracy[-1])
        rows["accuracy"].append(float(np.mean(acc)))
        rows["accuracy_min"].append(float(np.min(acc)))
        rows["accuracy_max"].append(float(np.max(acc)))
        rows["initial_accuracy"].append(float(np.nanmean(ens.train_accuracy[0])))
        rows["diverged"].append(float(np.mean(ens.diverged)))
    return {"C_W_values": [float(c) for c in C_W], **rows, "chance": chance}


def trainability_cell(C_W: float, depth: int, **kwargs: Any) -> dict:
    """One grid point (C_W, depth): :func:`trainability_row` with a single C_W, as a flat dict
    (accuracy, accuracy_min, accuracy_max, initial_accuracy, diverged, chance)."""
    row = trainability_row(depth, C_W=[float(C_W)], **kwargs)
    return {k: (v[0] if isinstance(v, list) else v) for k, v in row.items() if k != "C_W_values"}


# --------------------------------------------------------------------------------------------
# theory overlay


def theory_overlay(C_W: np.ndarray, C_b: float) -> dict[str, np.ndarray | float]:
    """χ_⊥, ξ_⊥ (the correlation depth scale) and the critical C_W at fixed C_b, for tanh, from
    :func:`pdlt.theory.criticality.phase_diagram` (book §5.1)."""
    cw = np.asarray(C_W, dtype=np.float64)
    out = _overlay(tuple(cw.tolist()), float(C_b))
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in out.items()}


@lru_cache(maxsize=16)
def _overlay(cw_: tuple[float, ...], C_b: float) -> dict[str, np.ndarray | float]:
    from pdlt.experiment.train import torch_threads
    from pdlt.theory.criticality import phase_diagram

    cw = np.asarray(cw_)
    with torch_threads(1):
        pd_ = phase_diagram("tanh", C_b=np.array([C_b]), C_W=cw)
    chi = np.asarray(pd_.chi_perp)[0]
    xi = np.asarray(pd_.xi_perp)[0]
    crossing = np.flatnonzero(np.diff(np.sign(chi - 1.0)) != 0)
    if crossing.size:
        i = crossing[0]  # linear interpolation of χ_⊥ = 1 between grid points
        critical = float(cw[i] + (1 - chi[i]) * (cw[i + 1] - cw[i]) / (chi[i + 1] - chi[i]))
    else:
        critical = math.nan
    return {"C_W": cw, "chi_perp": chi, "xi_perp": xi, "critical_C_W": critical}


# --------------------------------------------------------------------------------------------
# the diagram


@dataclass(frozen=True)
class Trainability:
    """Training accuracy over a C_W × depth grid, with the signal-propagation theory.

    Attributes
    ----------
    C_W, depth:
        The grid axes.
    accuracy:
        (len(depth), len(C_W)) mean training accuracy after ``settings["steps"]`` steps.
    diverged:
        Same shape: fraction of networks whose training diverged (counted at chance).
    settings:
        C_b, width, steps, learning_rate, n_train, n_networks, loss.
    theory:
        Fine C_W grid with χ_⊥ and ξ_⊥, and ``critical_C_W`` (χ_⊥ = 1).
    cells:
        One row per (depth, C_W, seed): the settings, accuracy, accuracy_min/max,
        initial_accuracy, diverged, chance, and the share of its sweep cell's (one depth's)
        seconds and cpu_seconds.
    """

    C_W: np.ndarray
    depth: np.ndarray
    accuracy: np.ndarray
    diverged: np.ndarray
    settings: dict
    theory: dict
    cells: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        """One row per (depth, C_W): accuracy, diverged fraction, χ_⊥ and 6ξ_⊥ there."""
        th = self.theory
        chi = np.interp(self.C_W, th["C_W"], th["chi_perp"])
        xi = np.interp(self.C_W, th["C_W"], th["xi_perp"])
        D, W = np.meshgrid(self.depth, self.C_W, indexing="ij")
        return pd.DataFrame(
            {
                "depth": D.ravel(),
                "C_W": W.ravel(),
                "accuracy": self.accuracy.ravel(),
                "diverged": self.diverged.ravel(),
                "chi_perp": np.tile(chi, len(self.depth)),
                "six_xi_perp": np.tile(6 * xi, len(self.depth)),
            }
        )

    def agreement(self, threshold: float | None = None) -> float:
        """Fraction of grid points where "trained" (accuracy above ``threshold``, default midway
        between chance and 1) agrees with "depth ≤ 6ξ_⊥"."""
        chance = float(self.cells["chance"].iloc[0])
        thr = (1 + chance) / 2 if threshold is None else threshold
        frame = self.to_frame()
        return float(((frame.accuracy > thr) == (frame.depth <= frame.six_xi_perp)).mean())

    def plot(self, ax=None):
        """Heat map of accuracy (depth × C_W) with χ_⊥ = 1 and the 6·ξ_⊥ curve; returns the figure."""
        import matplotlib.pyplot as plt

        fig = ax.figure if ax is not None else plt.figure(figsize=(6.4, 4.6))
        ax = ax or fig.add_subplot(111)
        cw, dp = self.C_W, self.depth
        mesh = ax.pcolormesh(
            _edges(cw),
            _edges(dp),
            self.accuracy,
            cmap="viridis",
            vmin=0.0,
            vmax=1.0,
            shading="flat",
        )
        fig.colorbar(mesh, ax=ax, label="training accuracy")
        th = self.theory
        ax.plot(th["C_W"], 6 * th["xi_perp"], "w-", lw=2, label="6·ξ⊥ (theory)")
        if math.isfinite(th["critical_C_W"]):
            ax.axvline(
                th["critical_C_W"], color="r", ls="--", lw=1.5, label="χ⊥ = 1 (order | chaos)"
            )
        ax.set_ylim(_edges(dp)[0], _edges(dp)[-1])
        ax.set_xlim(_edges(cw)[0], _edges(cw)[-1])
        ax.set_xlabel("C_W")
        ax.set_ylabel("depth L")
        s = self.settings
        ax.set_title(f"tanh, C_b = {s['C_b']}, width {s['width']}, {s['steps']} steps", fontsize=10)
        ax.legend(loc="upper right", fontsize=8, framealpha=0.6)
        return fig


def _edges(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    if v.size == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])


def _grid_values(name: str, values: object, kind: type) -> list:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be a non-empty list of positive numbers, got {values!r}")
    if kind is int:
        if np.any(arr != np.round(arr)) or np.any(arr < 2):
            raise ValueError(f"{name} must be integers ≥ 2, got {values!r}")
        return sorted({int(v) for v in arr})
    return sorted({round(float(v), 12) for v in arr})


def trainability(
    C_W: Sequence[float] = DEFAULT_C_W,
    depth: Sequence[int] = DEFAULT_DEPTHS,
    *,
    X: np.ndarray | None = None,
    y: np.ndarray | None = None,
    seeds: Sequence[int] = (0,),
    store: str | os.PathLike | None = DEFAULT_STORE,
    scheduler: Any = "serial",
    n_workers: int | None = None,
    progress: bool | None = None,
    device: str = "cpu",
    **settings: Any,
) -> Trainability:
    """The trainability phase diagram: train tanh MLPs over C_W × depth and measure training
    accuracy (Schoenholz et al. 2016 Fig. 5; book §5.1, §9.4).

    Parameters
    ----------
    C_W, depth:
        Grid axes (default 12 C_W values in [0.5, 4] × depths 4…96: see
        ``benchmarks/phase_diagram.py`` for its time on 2 cores with ``scheduler="processes"``).
    X, y:
        A data set (inputs (N, n_0), integer labels or one-hot rows); default scikit-learn's
        bundled digits. Inputs are normalized to |x|² = n_0.
    seeds:
        Replicate seeds (each cell trains ``n_networks`` networks per seed).
    store, scheduler, n_workers, progress:
        As in :func:`pdlt.experiment.sweep.sweep` (``store=None`` keeps results in memory). A
        sweep cell is one depth (and seed): all C_W values of the row train as one batched
        program (:func:`trainability_row`).
    device:
        "cpu" (default) or "cuda"; where the networks train (the results are the same
        networks, up to float32 rounding).
    settings:
        Override ``C_b`` (0.05), ``width`` (64), ``steps`` (300), ``learning_rate`` (2.0, for the
        mean loss), ``n_train`` (128), ``n_networks`` (2), ``loss`` ("cross_entropy" or "mse").
    """
    unknown = set(settings) - set(DEFAULT_SETTINGS)
    if unknown:
        raise TypeError(f"unknown settings {sorted(unknown)}; allowed: {sorted(DEFAULT_SETTINGS)}")
    s = {**DEFAULT_SETTINGS, **settings}
    s["C_b"] = _validation.non_negative("C_b", s["C_b"])
    # an ensemble needs 2 networks for its error bars (train_ensemble), a data set 2 examples
    for k, least in (("width", 1), ("steps", 1), ("n_train", 2), ("n_networks", 2)):
        s[k] = _validation.integer(k, s[k], min=least)
    s["learning_rate"] = _validation.positive("learning_rate", s["learning_rate"])
    if s["loss"] not in ("cross_entropy", "mse"):
        raise ValueError(f"loss must be 'cross_entropy' or 'mse', got {s['loss']!r}")
    cw = _grid_values("C_W", C_W, float)
    dp = _grid_values("depth", depth, int)
    from pdlt.experiment.ensemble import resolve_device

    resolve_device(device)  # a bad or absent device fails here, before any cell runs
    constants: dict[str, Any] = {}
    if (X is None) != (y is None):
        raise ValueError("give both X and y, or neither (the digits data set)")
    if X is not None:
        Xn = normalize_inputs(X)
        if not np.all(np.isfinite(Xn)):
            raise ValueError("X contains NaN or inf")
        constants = {"X": Xn, "y": _labels(y, Xn.shape[0])}
        s["n_train"] = min(int(s["n_train"]), Xn.shape[0])
    grid = _grid(cw, dp, s)
    if device != "cpu":
        constants["device"] = str(device)
    res: SweepResult = sweep(
        trainability_row,
        grid,
        seeds=seeds,
        constants=constants,
        store=store,
        scheduler=scheduler,
        n_workers=n_workers,
        progress=progress,
    )
    return _assemble(res, cw, dp, s)


def _grid(cw: list, dp: list, s: dict) -> dict:
    """The sweep grid: one cell per depth, the whole C_W row inside it; deepest first, so that
    parallel workers start on the longest cells (a cell's cost grows with its depth)."""
    return {"depth": sorted(dp, reverse=True), "C_W": [cw], **{k: [v] for k, v in s.items()}}


def _cells_frame(res: SweepResult) -> pd.DataFrame:
    """One row per (depth, C_W, seed) from the per-depth sweep cells; a cell's seconds are
    shared equally among its C_W values."""
    rows = []
    for cell, r in zip(res.cells, res.results, strict=True):
        if r is None:
            continue
        params = {k: v for k, v in cell.params.items() if k != "C_W"}
        n = len(r["C_W_values"])
        for i, c in enumerate(r["C_W_values"]):
            row = {**params, "C_W": c, "seed": cell.seed}
            for k, v in r.items():
                if k == "C_W_values":
                    continue
                row[k] = v[i] if isinstance(v, list) else v
            for k in ("seconds", "cpu_seconds"):
                row[k] = r[k] / n
            rows.append(row)
    return pd.DataFrame(rows)


def _assemble(res: SweepResult, cw: list, dp: list, s: dict) -> Trainability:
    frame = _cells_frame(res)
    acc = frame.pivot_table(index="depth", columns="C_W", values="accuracy", aggfunc="mean")
    div = frame.pivot_table(index="depth", columns="C_W", values="diverged", aggfunc="mean")
    fine = np.linspace(min(cw), max(cw), 120)
    return Trainability(
        C_W=np.asarray(cw),
        depth=np.asarray(dp),
        accuracy=acc.loc[dp, cw].to_numpy(),
        diverged=div.loc[dp, cw].to_numpy(),
        settings=s,
        theory=theory_overlay(fine, s["C_b"]),
        cells=frame,
    )


def stored_trainability(
    store: str | os.PathLike = DEFAULT_STORE,
    C_W: Sequence[float] = DEFAULT_C_W,
    depth: Sequence[int] = DEFAULT_DEPTHS,
    seeds: Sequence[int] = (0,),
    **settings: Any,
) -> Trainability | None:
    """The default-data diagram if every cell is already in ``store``, else None (no training)."""
    from pdlt.experiment.sweep import FileStore, fn_name, grid_cells

    if not Path(store, "cells").is_dir():
        return None
    s = {**DEFAULT_SETTINGS, **settings}
    cw, dp = _grid_values("C_W", C_W, float), _grid_values("depth", depth, int)
    fs = FileStore(store)
    cells = grid_cells(_grid(cw, dp, s), seeds, name=fn_name(trainability_row))
    if any(fs.get(c) is None for c in cells):
        return None
    return trainability(cw, dp, seeds=seeds, store=store, progress=False, **settings)
