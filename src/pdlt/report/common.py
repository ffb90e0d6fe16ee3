"""What several report sections share: the report's network and inputs."""

from __future__ import annotations

import math

import numpy as np

from pdlt.network import MLP
from pdlt.report import ReportConfig

# Critical C_W (with C_b = 0) for the activations whose criticality is a closed form
# (book §5.2–5.3: 1/A_2 for the scale-invariant class, 1/σ_1² for the K* = 0 class).
_CRITICAL_C_W = {
    "linear": 1.0,
    "relu": 2.0,
    "tanh": 1.0,
    "sin": 1.0,
    "erf": math.pi / 4,
}


def report_C_W(config: ReportConfig) -> float:
    if config.C_W is not None:
        return float(config.C_W)
    return _CRITICAL_C_W.get(config.activation, 1.0)


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
        C_b=config.C_b,
    )
