"""What the report's sections and the CLI share: the network setting, inputs and networks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

from pdlt.network import MLP
from pdlt.report import ReportConfig


def default_setting(
    activation: str, C_W: float | None = None, C_b: float | None = None
) -> tuple[float, float]:
    """The (C_b, C_W) the report and the CLI use when ``C_W``/``C_b`` are left out (None).

    Both None: the activation's critical point χ_∥ = χ_⊥ = 1, (5.55)–(5.56) (GELU (0.1729,
    1.983) (5.105), SWISH (0.5551, 1.988) (5.101), tanh (0, 1) (5.90)). Only C_W None: the
    order–chaos boundary χ_⊥(K*) = 1, (5.51), at that C_b (:func:`pdlt.critical_line`), or the
    critical point's C_W where the boundary has no point there. Only C_b None: C_b = 0.
    Activations with no criticality (sigmoid, softplus, cos) get C_b = 0, C_W = 1. Values given
    are returned unchanged (the library validates them where they are used).
    """
    cp = _critical_point(activation)
    if C_b is None:
        C_b = float(cp.C_b) if C_W is None and cp.exists else 0.0
    if C_W is None:
        C_W = _critical_C_W(activation, float(C_b))
    return float(C_b), float(C_W)


def report_C_W(config: ReportConfig) -> float:
    """The report's C_W (:func:`default_setting` of ``config.C_W``, ``config.C_b``)."""
    return default_setting(config.activation, config.C_W, config.C_b)[1]


def report_C_b(config: ReportConfig) -> float:
    """The report's C_b (:func:`default_setting` of ``config.C_W``, ``config.C_b``)."""
    return default_setting(config.activation, config.C_W, config.C_b)[0]


@lru_cache(maxsize=32)
def _critical_point(name: str):
    from pdlt.theory.criticality import critical_point

    return critical_point(name)


@lru_cache(maxsize=64)
def _critical_C_W(name: str, C_b: float) -> float:
    from pdlt.theory.criticality import critical_line

    cp = _critical_point(name)
    if not cp.exists:
        return 1.0
    if cp.C_b == C_b:
        return float(cp.C_W)
    line = critical_line(name, C_b)
    return float(line.C_W) if line.exists else float(cp.C_W)


def report_inputs(input_dim: int = 4) -> np.ndarray:
    """Three inputs with |x|² = n_0 (so K^{(1)}_αα = C_b + C_W, (5.2)) at pairwise cosines
    0.8, 0.6, 0.48."""
    units = np.zeros((3, input_dim))
    units[0, 0] = 1.0
    units[1, :2] = (0.8, 0.6)
    units[2, [0, 2]] = (0.6, 0.8)
    return units * math.sqrt(input_dim)


def report_net(
    config: ReportConfig, width: int, *, input_dim: int = 4, C_W: float | None = None
) -> MLP:
    """The report's network at hidden width ``width``: every section builds its networks here,
    so all of them share the report's (C_b, C_W) (``C_W`` overrides it, for scans)."""
    return MLP(
        activation=config.activation,
        depth=config.depth,
        width=width,
        input_dim=input_dim,
        C_W=report_C_W(config) if C_W is None else C_W,
        C_b=report_C_b(config),
    )


def learning_rate_scan(net: MLP, depths: Sequence[int], *, method: str = "auto") -> pd.DataFrame:
    """Θ^{(L)} of one input with |x|²/n_0 = 1 at constant learning rates and at the learning-rate
    equivalence principle's per-layer rates ((9.94)–(9.96), or the numerical rule), per depth L.

    The table's ``attrs`` hold the last rates' class and rule (``universality_class``, ``method``).
    """
    from pdlt.theory.ntk import ntk
    from pdlt.theory.ntk_criticality import learning_rates

    x = np.ones((1, net.input_dim))
    rows, lr = [], None
    for L in depths:
        base = net.with_(depth=L)
        lr = learning_rates(net.activation, L, method=method, C_W=net.C_W[0], C_b=net.C_b[0])
        rows.append(
            {
                "depth L": L,
                "Θ^(L), λ = 1": ntk(base, x).Theta[-1, 0, 0],
                "Θ^(L), scaled λ": ntk(lr.apply(base), x).Theta[-1, 0, 0],
                "λ_b^(1)": lr.lambda_b[0],
                "λ_b^(L)": lr.lambda_b[-1],
                "λ_W^(1)": lr.lambda_W[0],
                "λ_W^(L)": lr.lambda_W[-1],
            }
        )
    table = pd.DataFrame(rows)
    if lr is not None:
        table.attrs.update(universality_class=lr.universality_class, method=lr.method)
    return table
