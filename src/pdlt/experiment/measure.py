"""Empirical statistics of real-network ensembles, with error bars.

Each statistic is first reduced *within* a network (averaging over its neurons), giving one
number per network; the ensemble estimate is the mean over networks and its error the standard
error of that mean. Neurons of one network share the previous layer and are not independent,
so the spread across networks is the honest error bar.

Statistics are computed by *estimators*, one per group of statistics, registered in
:data:`ESTIMATORS` by name. An estimator is built as ``factory(net, x)``, sees every chunk of
sampled networks once (``update(chunk)``) and returns ``{name: (value, standard_error)}``.
Result names match the theory results' field names so :func:`pdlt.compare` can pair them.

Built-in groups:

``"K"``
    ``K``: E[z_{i;α} z_{i;β}] per layer, the two-point function that the infinite-width kernel
    K^{(ℓ)} predicts up to O(1/n) (book §4.1–4.3).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from pdlt._tables import long_frame
from pdlt._threads import walk_threads
from pdlt.experiment.ensemble import (
    DEFAULT_MAX_MEMORY,
    Chunk,
    check_ensemble_args,
    chunk_entries,
    forward_chunks,
    progress_bar,
    progress_enabled,
    resolve_device,
    resolve_dtype,
)
from pdlt.network import MLP, validate_inputs

Tensor = torch.Tensor


class Estimator(Protocol):
    def update(self, chunk: Chunk) -> None: ...

    def result(self) -> dict[str, tuple[np.ndarray, np.ndarray]]: ...


# statistic group → "module:factory"; factories are imported lazily so that a group's module is
# only loaded when asked for.
ESTIMATORS: Mapping[str, str] = MappingProxyType(
    {
        "K": "pdlt.experiment.measure:TwoPointEstimator",
        "V": "pdlt.experiment.finite_width:FiniteWidthEstimator",
        "Theta": "pdlt.experiment.ntk:ThetaEstimator",
        "ntk_fluctuations": "pdlt.experiment.ntk:NTKFluctuationEstimator",
        "dntk": "pdlt.experiment.dntk:DNTKEstimator",
        "ddntk": "pdlt.experiment.dntk:DDNTKEstimator",
        "Theta1": "pdlt.experiment.dntk:Theta1Estimator",
    }
)


class RunningMoments:
    """Mean and variance across networks, merged chunk by chunk (Chan et al.'s pairwise update)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def update(self, samples: Tensor) -> None:
        """``samples``: (B, ...) float64, one row per network."""
        n = samples.shape[0]
        mean = samples.mean(dim=0)
        m2 = ((samples - mean) ** 2).sum(dim=0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, standard error of the mean) as float64 numpy arrays."""
        if self.mean is None or self.m2 is None or self.count < 2:
            raise ValueError("need at least two networks for a mean with an error bar")
        var = self.m2 / (self.count - 1)
        return self.mean.cpu().numpy(), torch.sqrt(var / self.count).cpu().numpy()


def per_network_two_point(z: Tensor) -> Tensor:
    """(1/n) Σ_i z_{i;α} z_{i;β} for each network: (B, n, N) → (B, N, N), accumulated in float64."""
    zd = z.to(torch.float64)
    return torch.bmm(zd.transpose(1, 2), zd) / z.shape[1]


class TwoPointEstimator:
    """``K``: E[z_{i;α} z_{i;β}] per layer, averaged over neurons within each network."""

    def __init__(self, net: MLP, x: Tensor) -> None:
        self._moments = RunningMoments()

    def update(self, chunk: Chunk) -> None:
        self._moments.update(torch.stack([per_network_two_point(z) for z in chunk.z], dim=1))

    def result(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {"K": self._moments.result()}


def _load_factory(group: str):
    module, _, name = ESTIMATORS[group].partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True, eq=False)
class Measurement:
    """Statistics measured on an ensemble of real networks, each with its standard error.

    Every statistic ``S`` is available as ``ms.S`` with its standard error ``ms.S_err``; the
    foundation group ``"K"`` gives ``K``/``K_err`` of shape (depth, N, N).

    Attributes
    ----------
    values, errors:
        {statistic name: array}.
    n_networks, seed, dtype, device:
        How it was measured.
    net, x:
        The network spec and the inputs (N, n_0).
    """

    values: Mapping[str, np.ndarray]
    errors: Mapping[str, np.ndarray]
    n_networks: int
    seed: int
    dtype: str
    device: str
    net: MLP
    x: np.ndarray = field(repr=False)

    @property
    def statistics(self) -> tuple[str, ...]:
        return tuple(self.values)

    def __getattr__(self, name: str) -> np.ndarray:
        # only reached when normal lookup fails: statistics and their errors by name
        values = self.__dict__.get("values", {})
        errors = self.__dict__.get("errors", {})
        if name in values:
            return values[name]
        if name.endswith("_err") and name[:-4] in errors:
            return errors[name[:-4]]
        raise AttributeError(
            f"Measurement has no statistic {name!r}; measured: {sorted(values)} "
            f"(ask measure(..., statistics=...) for more; available groups: {sorted(ESTIMATORS)})"
        )

    def to_frame(self, statistic: str = "K") -> pd.DataFrame:
        """Long table of one statistic: layer, indices, value and standard error."""
        return long_frame({statistic: self.values[statistic], "error": self.errors[statistic]})

    def __repr__(self) -> str:
        return (
            f"Measurement(statistics={list(self.values)}, n_networks={self.n_networks}, "
            f"seed={self.seed}, dtype={self.dtype}, device={self.device})"
        )


def measure(
    net: MLP,
    x: np.ndarray | Tensor,
    n_networks: int = 1000,
    seed: int = 0,
    *,
    statistics: Sequence[str] = ("K",),
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool | None = None,
) -> Measurement:
    """Sample ``n_networks`` real networks of ``net`` and measure their statistics on ``x``.

    Parameters
    ----------
    net:
        The network spec; the networks are drawn with its C_b, C_W and widths.
    x:
        Inputs (N, n_0).
    n_networks:
        Ensemble size M (≥ 2); errors shrink like 1/√M.
    seed:
        The same seed gives the same networks and numbers (on the same device type).
    statistics:
        Groups of statistics to measure, from :data:`ESTIMATORS` (default ``("K",)``).
    dtype:
        Network arithmetic, float32 (default) or float64; statistics accumulate in float64.
    device:
        ``"cpu"`` or ``"cuda"``.
    max_memory:
        Bytes per chunk of networks.
    progress:
        Show a progress bar (default: on an interactive terminal, never under CI).

    Returns
    -------
    Measurement
        e.g. ``.K`` and ``.K_err`` of shape (depth, N, N).
    """
    xt = validate_inputs(net, x)
    check_ensemble_args(n_networks, seed, max_memory)
    dt, dev = resolve_dtype(dtype), resolve_device(device)
    if isinstance(statistics, str):
        statistics = (statistics,)
    unknown = [s for s in statistics if s not in ESTIMATORS]
    if unknown or not statistics:
        raise ValueError(f"unknown statistics {unknown}; available: {sorted(ESTIMATORS)}")
    estimators = [_load_factory(s)(net, xt) for s in dict.fromkeys(statistics)]
    entries = chunk_entries(net, xt.shape[0], n_networks, dt, max_memory)
    with (
        walk_threads(entries),
        progress_bar("sampling networks", n_networks, progress_enabled(progress)) as advance,
    ):
        for chunk in forward_chunks(
            net, xt, n_networks, seed, dtype=dt, device=dev, max_memory=max_memory
        ):
            for est in estimators:
                est.update(chunk)
            advance(chunk.size)
    values: dict[str, np.ndarray] = {}
    errors: dict[str, np.ndarray] = {}
    for est in estimators:
        for name, (val, err) in est.result().items():
            if not (np.isfinite(val).all() and np.isfinite(err).all()):
                raise FloatingPointError(
                    f"measured {name} is not finite: the sampled networks overflowed; "
                    "use dtype='float64', a smaller C_W or fewer layers"
                )
            values[name], errors[name] = val, err
    return Measurement(
        values=MappingProxyType(values),
        errors=MappingProxyType(errors),
        n_networks=int(n_networks),
        seed=int(seed),
        dtype=str(dt).removeprefix("torch."),
        device=str(dev),
        net=net,
        x=xt.numpy(),
    )
