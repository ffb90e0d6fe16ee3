"""What several report sections share: the report's network and inputs."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from pdlt.network import MLP
from pdlt.report import ReportConfig


def report_C_W(config: ReportConfig) -> float:
    """The report's C_W: ``config.C_W`` if set, else critical for the report's activation.

    Critical means the book's criticality χ_∥ = χ_⊥ = 1 (:func:`pdlt.critical_point`) when the
    report's C_b is the activation's critical C_b (see :func:`report_C_b`); for another C_b the
    order–chaos boundary χ_⊥(K*) = 1 there (:func:`pdlt.critical_line`). Activations with no
    criticality (sigmoid, softplus, cos) get C_W = 1.
    """
    if config.C_W is not None:
        return float(config.C_W)
    return _critical_setting(config.activation, report_C_b(config))


def report_C_b(config: ReportConfig) -> float:
    """The report's C_b: the activation's critical C_b when C_W is left to the report (None) and
    C_b is at its default 0 (GELU 0.1729, SWISH 0.5551; 0 for the other built-ins), else
    ``config.C_b``."""
    if config.C_W is None and config.C_b == 0.0:
        cp = _critical_point(config.activation)
        if cp.exists:
            return float(cp.C_b)
    return float(config.C_b)


@lru_cache(maxsize=32)
def _critical_point(name: str):
    from pdlt.theory.criticality import critical_point

    return critical_point(name)


@lru_cache(maxsize=64)
def _critical_setting(name: str, C_b: float) -> float:
    from pdlt.theory.criticality import critical_line

    cp = _critical_point(name)
    if not cp.exists:
        return 1.0
    if cp.C_b == C_b:
        return float(cp.C_W)
    line = critical_line(name, C_b)
    return float(line.C_W) if line.exists else float(cp.C_W)


def report_inputs(input_dim: int = 4) -> np.ndarray:
    """Three inputs with |x|² = n_0 (so K^{(1)}_αα = C_b + C_W) at pairwise cosines 0.8, 0.6, 0.48."""
    units = np.zeros((3, input_dim))
    units[0, 0] = 1.0
    units[1, :2] = (0.8, 0.6)
    units[2, [0, 2]] = (0.6, 0.8)
    return units * math.sqrt(input_dim)


def report_net(config: ReportConfig, width: int) -> MLP:
    return MLP(
        activation=config.activation,
        depth=config.depth,
        width=width,
        input_dim=4,
        C_W=report_C_W(config),
        C_b=report_C_b(config),
    )
