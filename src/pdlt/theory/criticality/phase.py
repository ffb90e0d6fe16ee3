"""Phase diagrams over (C_b, C_W) (book §5.1; Poole et al. 2016, Fig. 1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt.theory.criticality._common import (
    CRITICAL_TOL,
    K_MAX,
    ActivationLike,
    Printable,
    Tensor,
    act_of,
    as_t,
    chi_parallel_at,
    clear_overflow,
    grid,
    mean_dsigma2,
    positive,
    renamed_first_kernel,
    residual_factor,
)
from pdlt.theory.criticality.classes import CriticalPoint, critical_point
from pdlt.theory.criticality.fixed_points import correlation_fixed_point, vector_fixed_point
from pdlt.theory.criticality.setting import CriticalLine, critical_line

# --------------------------------------------------------------------------------------------
# phase diagrams


@dataclass(frozen=True, repr=False)
class PhaseDiagram(Printable):
    """Signal propagation over a (C_b, C_W) grid (book §5.1; Poole et al. 2016, Fig. 1).

    Every array has shape (len(C_b), len(C_W)); row i is C_b[i], column j is C_W[j]. Fields as
    in :class:`Criticality`; ``phase`` is a string array. ``boundary`` is the order–chaos line
    C_W(C_b) at the grid's C_b, ``critical`` the activation's :class:`CriticalPoint`.
    """

    activation: str
    C_b: np.ndarray
    C_W: np.ndarray
    K_star: np.ndarray
    chi_parallel: np.ndarray
    chi_perp: np.ndarray
    c_star: np.ndarray
    chi_c: np.ndarray
    xi_parallel: np.ndarray
    xi_perp: np.ndarray
    phase: np.ndarray
    boundary: CriticalLine
    critical: CriticalPoint

    def __repr__(self) -> str:
        counts = {p: int((self.phase == p).sum()) for p in ("ordered", "critical", "chaotic")}
        return (
            f"PhaseDiagram({self.activation!r}, C_b: {self.C_b.size} values in "
            f"[{self.C_b.min():g}, {self.C_b.max():g}], C_W: {self.C_W.size} values in "
            f"[{self.C_W.min():g}, {self.C_W.max():g}], phases {counts})"
        )

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per (C_b, C_W)."""
        B, W = np.meshgrid(self.C_b, self.C_W, indexing="ij")
        cols = {"C_b": B, "C_W": W}
        for name in "K_star chi_parallel chi_perp c_star chi_c xi_parallel xi_perp phase".split():
            cols[name] = getattr(self, name)
        return pd.DataFrame({k: np.asarray(v).reshape(-1) for k, v in cols.items()})


@clear_overflow
def phase_diagram(
    activation: ActivationLike,
    C_b: float | np.ndarray | None = None,
    C_W: float | np.ndarray | None = None,
    *,
    K_first: float | None = None,
    K1: float | None = None,
    skip: float = 0.0,
) -> PhaseDiagram:
    """K*, χ_∥, χ_⊥, c*, χ_c, ξ_∥, ξ_⊥ and the phase over a (C_b, C_W) grid (book §5.1).

    Vectorised over the grid (one Gaussian quadrature call per bisection step for all points).
    Default grid: C_b ∈ [0, 1] (21 values) × C_W ∈ [0.25, 4] (31 values).
    ``K_first`` as in :func:`criticality` (default C_b + C_W per point). Agrees with
    :func:`criticality` point by point to ~1e-10 (tested). ``skip`` = γ: a residual MLP
    (book App. B), as in :func:`criticality` — the plain grid at (C_b, C_W)/(1 − γ²) with every χ
    mapped to (1 − γ²)χ + γ².

    Examples
    --------
    >>> pd_ = pdlt.phase_diagram("tanh", C_b=np.linspace(0, 0.5, 11), C_W=np.linspace(0.5, 3, 26))
    >>> pd_.chi_perp.shape
    (11, 26)
    """
    act = act_of(activation)
    cb = grid("C_b", np.linspace(0.0, 1.0, 21) if C_b is None else C_b, allow_zero=True)
    cw = grid("C_W", np.linspace(0.25, 4.0, 31) if C_W is None else C_W, allow_zero=False)
    g2, f = residual_factor(skip)
    B, W = np.meshgrid(cb, cw, indexing="ij")
    b, w = as_t(B.reshape(-1)), as_t(W.reshape(-1))
    K_first = renamed_first_kernel(K_first, K1)
    k1 = (
        b + w
        if K_first is None
        else torch.full_like(b, positive("K_first", K_first, allow_zero=True))
    )
    # the residual map is the plain one at (C_b, C_W)/(1 − γ²) (same fixed points and flow)
    b, w = b / f, w / f
    hom = act.homogeneous
    if hom is None:
        Kstar = vector_fixed_point(act, b, w, k1)
    else:  # linear map F(K) = C_b + C_W A_2 K, solved exactly (see fixed_points)
        chi = w * (hom[0] ** 2 + hom[1] ** 2) / 2
        contracting = b / torch.clamp(1 - chi, min=1e-300)
        Kstar = torch.where(
            chi < 1 - CRITICAL_TOL,
            torch.where(contracting <= K_MAX, contracting, torch.full_like(b, math.inf)),
            torch.where(
                (torch.abs(chi - 1) <= CRITICAL_TOL) & (b == 0), k1, torch.full_like(b, math.inf)
            ),
        )
    finite = torch.isfinite(Kstar)
    Keval = torch.where(finite, Kstar, torch.full_like(Kstar, K_MAX))
    chi_par = chi_parallel_at(act, Keval, w)
    chi_p = w * mean_dsigma2(act, Keval)
    c_star = torch.ones_like(b)
    chi_c = chi_p.clone()
    chaotic = (chi_p > 1 + CRITICAL_TOL) & finite & (Kstar > 0)
    if chaotic.any():
        c, s = correlation_fixed_point(act, Kstar[chaotic], b[chaotic], w[chaotic])
        c_star[chaotic], chi_c[chaotic] = c, s
    chi_par, chi_p, chi_c = (f * chi + g2 for chi in (chi_par, chi_p, chi_c))

    def xi(chi: Tensor) -> Tensor:
        out = 1.0 / torch.abs(torch.log(torch.clamp(chi, min=1e-300)))
        return torch.where(torch.abs(chi - 1) <= CRITICAL_TOL, torch.full_like(out, math.inf), out)

    phase = np.where(
        np.abs(chi_p.numpy() - 1) <= CRITICAL_TOL,
        "critical",
        np.where(chi_p.numpy() < 1, "ordered", "chaotic"),
    )
    shape = B.shape

    def arr(t: Tensor) -> np.ndarray:
        return t.numpy().reshape(shape)

    return PhaseDiagram(
        activation=act.name,
        C_b=cb,
        C_W=cw,
        K_star=arr(Kstar),
        chi_parallel=arr(chi_par),
        chi_perp=arr(chi_p),
        c_star=arr(c_star),
        chi_c=arr(chi_c),
        xi_parallel=arr(xi(chi_par)),
        xi_perp=arr(xi(chi_c)),
        phase=phase.reshape(shape),
        boundary=critical_line(act, cb, skip=skip),
        critical=critical_point(act, skip=skip),
    )
