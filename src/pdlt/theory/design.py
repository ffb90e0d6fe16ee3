"""Design rules from the book's appendices: the optimal aspect ratio r* = L/n (book App. A, B).

At criticality V^{(ℓ)}/(n K^{(ℓ)2}) ≈ ν ℓ/n (A.68). The mutual information between groups of
output neurons, at next-to-leading order, is maximal at (A.73)

    r* = (4 / (20 + 3 n_L)) · (1/ν)

and a residual network has the same rule with ν(γ) (B.36). ν comes from
:func:`pdlt.critical_point` (``vertex_growth``; ν(γ) for ``skip`` ≠ 0 — for the scale-invariant
class from the residual path recursion of :mod:`pdlt.theory.vertex`, which Monte Carlo supports
over the book's B.29: ReLU ν(0.5) = 6.50, not 3.56).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
from scipy import optimize

from pdlt import _validation
from pdlt.network import MLP
from pdlt.theory.criticality import critical_line, critical_point
from pdlt.theory.criticality._common import (
    ActivationLike,
    mean_sigma2,
    mean_sigma4,
)
from pdlt.theory.criticality._common import (
    act_of as activation_of,
)
from pdlt.theory.ntk_criticality import learning_rates


def optimal_aspect_ratio(
    activation: ActivationLike, output_dim: int = 1, skip: float = 0.0
) -> float:
    """r* = L/n that maximizes the NLO mutual information of the outputs, (4/(20 + 3n_L))/ν(γ)
    (book eqs. A.73, B.36).

    Raises
    ------
    ValueError
        When the activation has no criticality (ν is defined at criticality only), or when ν(γ)
        is not available (an activation whose plain ν is not derived, such as ELU; see
        :func:`pdlt.critical_point`).

    Examples
    --------
    >>> pdlt.optimal_aspect_ratio("tanh")          # (4/23)/(2/3) = 0.26087
    """
    n_L = _validation.integer("output_dim", output_dim, min=1)
    cp = critical_point(activation, skip=skip)
    if not cp.exists:
        raise ValueError(
            f"{cp.activation} has no criticality, so ν and r* are undefined: {cp.note}"
        )
    nu = cp.vertex_growth
    if nu is None or not nu > 0:
        raise ValueError(f"ν is not available for {cp.activation} at skip = {skip:g}: {cp.note}")
    return 4.0 / (20.0 + 3.0 * n_L) / nu


# --------------------------------------------------------------------------------------------
# a network for an activation and a parameter budget


@dataclass(frozen=True, repr=False)
class Recommendation:
    """A network designed from the theory for an activation and a parameter budget.

    Attributes
    ----------
    activation, input_dim, output_dim:
        As requested.
    depth, width, skip:
        L, the hidden width n and the residual γ of the recommended MLP.
    C_b, C_W:
        The initialization (criticality, book §5.2–5.3 and App. B; see ``reasons``).
    lambda_b, lambda_W:
        Per-layer learning-rate multipliers, ℓ = 1 … L (learning-rate equivalence, book
        eqs. 9.94–9.95, :func:`pdlt.learning_rates`).
    aspect_ratio:
        L/n of the recommended network.
    r_star:
        The optimal aspect ratio (book eqs. A.73, B.36); None where the theory gives none and a
        depth or width was given instead.
    nu:
        The ν used for r* (V/(nK²) ≈ νℓ/n).
    n_params:
        The recommended network's exact number of parameters (weights and biases).
    budget:
        The requested ``n_params``.
    reasons:
        Each number with the rule that produced it.
    warnings:
        Where the request could not be met as asked, and what was done instead.
    """

    activation: str
    input_dim: int
    output_dim: int
    depth: int
    width: int
    skip: float
    C_b: float
    C_W: float
    lambda_b: tuple[float, ...]
    lambda_W: tuple[float, ...]
    aspect_ratio: float
    r_star: float | None
    nu: float | None
    n_params: int
    budget: int
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]

    def mlp(self) -> MLP:
        """The recommended network as a :class:`pdlt.MLP` (C_b, C_W, λ's and γ set)."""
        return MLP(
            self.activation,
            depth=self.depth,
            width=self.width,
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            C_b=self.C_b,
            C_W=self.C_W,
            lambda_b=self.lambda_b,
            lambda_W=self.lambda_W,
            skip=self.skip,
        )

    def module(self, *, seed: int | None = None) -> torch.nn.Sequential:
        """A torch module of the recommended network, initialized at the recommended
        (C_b, C_W) (:meth:`pdlt.MLP.torch_module`)."""
        return self.mlp().torch_module(seed=seed)

    def to_frame(self) -> pd.DataFrame:
        """One row per number: quantity, value and the rule that produced it."""
        rules = dict(r.split(": ", 1) for r in self.reasons if ": " in r)
        rows = [
            ("depth L", self.depth, rules.get("depth", "")),
            ("width n", self.width, rules.get("width", "")),
            ("skip γ", self.skip, rules.get("skip", "")),
            ("C_b", self.C_b, rules.get("C_b, C_W", "")),
            ("C_W", self.C_W, rules.get("C_b, C_W", "")),
            ("lambda_b (ℓ=1)", self.lambda_b[0], rules.get("lambda_b, lambda_W", "")),
            ("lambda_b (ℓ=L)", self.lambda_b[-1], ""),
            ("lambda_W (ℓ=1)", self.lambda_W[0], ""),
            ("lambda_W (ℓ=L)", self.lambda_W[-1], ""),
            ("nu", self.nu, rules.get("nu", "")),
            ("r*", self.r_star, rules.get("r*", "")),
            ("L/n", self.aspect_ratio, ""),
            ("parameters", self.n_params, rules.get("parameters", "")),
        ]
        return pd.DataFrame(rows, columns=["quantity", "value", "rule"])

    def __repr__(self) -> str:
        def f(v: float | None) -> str:
            return "—" if v is None else f"{v:.6g}"

        lines = [
            f"Recommendation({self.activation!r}: depth L = {self.depth}, width n = {self.width}, "
            f"skip γ = {self.skip:g}, {self.n_params:,} parameters (budget {self.budget:,})",
            f"  C_b = {f(self.C_b)}, C_W = {f(self.C_W)}; λ_b = {f(self.lambda_b[0])} … "
            f"{f(self.lambda_b[-1])}, λ_W = {f(self.lambda_W[0])} … {f(self.lambda_W[-1])}",
            f"  L/n = {f(self.aspect_ratio)}, r* = {f(self.r_star)}, ν = {f(self.nu)}",
            "  why:",
            *(f"    - {r}" for r in self.reasons),
        ]
        if self.warnings:
            lines += ["  warnings:", *(f"    ! {w}" for w in self.warnings)]
        return "\n".join(lines) + "\n)"


def parameter_count(depth: int, width: int, input_dim: int, output_dim: int) -> int:
    """Weights and biases of an MLP: n_0 n + (L−2) n² + n n_L weights, (L−1) n + n_L biases."""
    L, n = depth, width
    if L == 1:
        return input_dim * output_dim + output_dim
    return input_dim * n + (L - 2) * n * n + n * output_dim + (L - 1) * n + output_dim


def _width_for_depth(budget: int, L: int, n0: int, nL: int) -> float:
    """The real n ≥ 0 with parameter_count(L, n) = budget (a quadratic in n)."""
    a, b, c = L - 2, n0 + nL + L - 1, nL - budget
    if a == 0:
        return -c / b
    return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)


def _initialization(act, cp, skip: float) -> tuple[float, float, float | None, str, list[str]]:
    """(C_b, C_W, ν, reason, warnings): criticality where it exists, else the order-to-chaos
    point at C_b = 0 with a per-layer ν (stated as such)."""
    warn: list[str] = []
    if cp.exists:
        nu = cp.vertex_growth
        reason = (
            f"C_b, C_W: criticality χ_∥ = χ_⊥ = 1 of the {cp.universality_class} class "
            f"(pdlt.critical_point{', skip = γ, scaled by 1 − γ², eqs. B.20–B.21' if skip else ''})"
        )
        # ν(γ) is None exactly where the plain ν is (ELU's kink): the sizing says so below
        return cp.C_b, cp.C_W, nu, reason, warn
    f = 1.0 - skip * skip
    line = critical_line(act, 0.0)
    C_W_plain, K = float(line.C_W), float(line.K_star)
    Kt = torch.tensor([K], dtype=torch.float64)
    g, m4 = float(mean_sigma2(act, Kt)[0]), float(mean_sigma4(act, Kt)[0])
    nu = C_W_plain**2 * (m4 - g * g) / K**2
    warn.append(
        f"{cp.activation} has no criticality (χ_∥ = χ_⊥ = 1 is impossible, book §5.3.2): "
        f"used the order-to-chaos point χ_⊥(K*) = 1 at C_b = 0 instead (C_W = {C_W_plain:.6g}, "
        f"K* = {K:.6g}); there χ_∥ ≠ 1, so ν = C_W² Var[σ²]/K*² = {nu:.4g} is only the "
        "one-layer growth of V/(nK²), and r* is a rough guide"
    )
    reason = "C_b, C_W: order-to-chaos boundary χ_⊥ = 1 at C_b = 0 (pdlt.critical_line)" + (
        ", scaled by 1 − γ²" if skip else ""
    )
    return 0.0, C_W_plain * f, nu, reason, warn


def _nu_method(cp) -> str:
    """How ν(γ) of a residual critical point was obtained (empty for γ = 0)."""
    if cp.skip == 0.0 or cp.vertex_growth is None:
        return ""
    if cp.universality_class == "scale-invariant":
        return (
            " (residual path recursion, every Hermite order of the cross-layer σ² covariances: "
            "C_W² Σ_j c_j²(1 + γ^j)/(1 − γ^j)/K²; the book's B.29 keeps j = 2 only)"
        )
    return " ((2/3)(1 − γ⁴), B.35: exact as K → 0)"


def recommend(
    activation: ActivationLike,
    *,
    n_params: int,
    input_dim: int,
    output_dim: int = 1,
    depth: int | None = None,
    width: int | None = None,
    skip: float | None = None,
) -> Recommendation:
    """Depth, width, initialization and learning rates for an activation and a parameter
    budget, each with the rule that produced it.

    * C_b, C_W: criticality (:func:`pdlt.critical_point`, with ``skip``: book §5.2–5.3, B.20–21);
    * λ_b, λ_W per layer: the learning-rate equivalence principle (eqs. 9.94–9.95,
      :func:`pdlt.learning_rates`);
    * L/n = r* = (4/(20 + 3n_L))/ν(γ) (eqs. A.73, B.36), with the parameter count
      n_0 n + (L−2) n² + n n_L (+ biases) = ``n_params`` fixing the scale;
    * ``depth`` or ``width`` given: the other from the budget (a warning where L/n is far
      from r*); both given: the budget is only checked.

    ``skip`` None means a plain MLP (γ = 0). Where the theory cannot do what is asked (no
    criticality, a budget too small for the recommended depth, ν(γ) unknown) the result says
    so in ``warnings`` and what was used instead.

    Examples
    --------
    >>> rec = pdlt.recommend("tanh", n_params=1_000_000, input_dim=784, output_dim=10)
    >>> rec.depth, rec.width
    (24, 195)
    """
    act = activation_of(activation)
    budget = _validation.integer("n_params", n_params, min=1)
    n0 = _validation.integer("input_dim", input_dim, min=1)
    nL = _validation.integer("output_dim", output_dim, min=1)
    L_req = None if depth is None else _validation.integer("depth", depth, min=2)
    n_req = None if width is None else _validation.integer("width", width, min=1)
    gamma = 0.0 if skip is None else _validation.real("skip", skip)
    if gamma * gamma >= 1.0:
        raise ValueError(f"skip must satisfy |γ| < 1 (criticality needs γ² < 1), got {gamma:g}")
    if L_req is not None and parameter_count(L_req, 1, n0, nL) > budget:
        raise ValueError(
            f"n_params = {budget} is too small for depth {L_req}: even width 1 needs "
            f"{parameter_count(L_req, 1, n0, nL)} parameters"
        )
    if n_req is not None and parameter_count(2, n_req, n0, nL) > budget:
        raise ValueError(
            f"n_params = {budget} is too small for width {n_req}: even depth 2 needs "
            f"{parameter_count(2, n_req, n0, nL)} parameters"
        )
    cp = critical_point(act, skip=gamma)
    C_b, C_W, nu, init_reason, warns = _initialization(act, cp, gamma)
    reasons = [
        "skip: "
        + (
            f"γ = {gamma:g} as requested (z^(ℓ+1) = b + Wσ(z^(ℓ)) + γ z^(ℓ), eq. B.3)"
            if skip is not None
            else "plain MLP (γ = 0; no skip requested) — a residual γ changes r* as 1/ν(γ), eq. B.36"
        ),
        f"{init_reason}: C_b = {C_b:.6g}, C_W = {C_W:.6g}",
    ]
    r_star = None
    if nu is not None and nu > 0:
        r_star = 4.0 / (20.0 + 3.0 * nL) / nu
        reasons.append(
            f"nu: V/(nK²) ≈ νℓ/n at criticality (A.68, B.35): ν = {nu:.6g}{_nu_method(cp)}"
            if cp.exists
            else f"nu: one-layer growth C_W² Var[σ²]/K*² = {nu:.6g} (no criticality, see warnings)"
        )
        reasons.append(
            f"r*: optimal aspect ratio (4/(20 + 3·{nL}))/ν = {r_star:.6g} (eqs. A.73, B.36)"
        )
    elif L_req is None and n_req is None:
        raise ValueError(
            f"ν, hence r*, is not available for {cp.activation} ({cp.note}); give depth= "
            "or width= to size the network from the budget"
        )
    else:
        warns.append(
            f"ν, hence r*, is not available for {cp.activation}: the size follows the depth/width "
            "given and the budget only, without an aspect-ratio rule"
        )
    L, n, sizing = _size(budget, n0, nL, r_star, L_req, n_req, warns)
    reasons.extend(sizing)
    count = parameter_count(L, n, n0, nL)
    reasons.append(
        f"parameters: n_0 n + (L−2) n² + n n_L weights + (L−1) n + n_L biases = {count:,} "
        f"(budget {budget:,}, {100 * (count - budget) / budget:+.1f}%)"
    )
    if L_req is not None and n_req is not None and abs(count - budget) > 0.1 * budget:
        warns.append(
            f"depth {L} and width {n} give {count:,} parameters, not the budget {budget:,}"
        )
    if r_star is not None and (L_req is not None or n_req is not None):
        if not 0.5 * r_star <= L / n <= 2.0 * r_star:
            warns.append(
                f"the requested size gives L/n = {L / n:.4g}, far from r* = {r_star:.4g}: "
                + (
                    "deeper than optimal, so the finite-width fluctuations dominate"
                    if L / n > r_star
                    else "shallower than optimal, so representation learning is weak"
                )
            )
    input_norm = 1.0 if cp.K_star in (None, 0.0) else (cp.K_star - C_b) / C_W
    lr = learning_rates(act, L, C_W=C_W, C_b=C_b, input_norm=input_norm)
    reasons.append(
        "lambda_b, lambda_W: learning-rate equivalence, every layer the same share of the NTK "
        + (
            "(eqs. 9.94–9.95)"
            if lr.method == "book"
            else f"(numerical rule for the {cp.universality_class} class, from K^(1) = K*)"
        )
    )
    if gamma != 0.0:
        warns.append(
            "learning rates are the plain-MLP rule: the residual NTK's per-layer shares are not "
            "derived here"
        )
    return Recommendation(
        activation=act.name,
        input_dim=n0,
        output_dim=nL,
        depth=L,
        width=n,
        skip=gamma,
        C_b=float(C_b),
        C_W=float(C_W),
        lambda_b=lr.lambda_b,
        lambda_W=lr.lambda_W,
        aspect_ratio=L / n,
        r_star=r_star,
        nu=nu,
        n_params=count,
        budget=budget,
        reasons=tuple(reasons),
        warnings=tuple(warns),
    )


def _size(
    budget: int,
    n0: int,
    nL: int,
    r_star: float | None,
    L_req: int | None,
    n_req: int | None,
    warns: list[str],
) -> tuple[int, int, list[str]]:
    """(L, n, reasons) from the budget and r*, or from the depth/width given."""
    if L_req is not None and n_req is not None:
        return L_req, n_req, ["depth: as requested", "width: as requested"]
    if L_req is not None:
        n = max(1, int(_width_for_depth(budget, L_req, n0, nL)))
        return (
            L_req,
            n,
            ["depth: as requested", "width: the largest n within the budget at that depth"],
        )
    if n_req is not None:
        per_layer = n_req * n_req + n_req
        L = 2 + int((budget - parameter_count(2, n_req, n0, nL)) // per_layer)
        return (
            L,
            n_req,
            ["depth: the largest L within the budget at that width", "width: as requested"],
        )
    assert r_star is not None
    n_real = width_at_aspect_ratio(r_star, budget, n0, nL)
    L = max(2, round(r_star * n_real))
    if r_star * n_real < 1.5:
        warns.append(
            f"the budget {budget:,} is too small for the recommended depth: r* n = "
            f"{r_star * n_real:.3g} < 2 layers at width {n_real:.0f}, so depth is set to 2 "
            f"(L/n = r* needs about {_budget_for_depth(2, r_star, n0, nL):,} parameters)"
        )
    n = max(1, int(_width_for_depth(budget, L, n0, nL)))
    return (
        L,
        n,
        [
            f"depth: L = round(r* n) = {L}, solving L = r* n and the parameter count = budget",
            f"width: the largest n within the budget at depth {L}",
        ],
    )


def width_at_aspect_ratio(ratio: float, budget: int, input_dim: int, output_dim: int) -> float:
    """The real width n at which depth L = max(2, ratio·n) uses the budget exactly:
    n_0 n + (L−2) n² + n n_L + (L−1) n + n_L = ``budget`` (solved by Brent's method)."""

    def excess(n: float) -> float:
        L = max(2.0, ratio * n)
        return (input_dim + output_dim + L - 1) * n + (L - 2) * n * n + output_dim - budget

    hi = 2.0
    while excess(hi) < 0:
        hi *= 2
    return float(optimize.brentq(excess, 1e-9, hi, xtol=1e-9))


def _budget_for_depth(L: int, r_star: float, n0: int, nL: int) -> int:
    n = max(1, math.ceil(L / r_star))
    return parameter_count(L, n, n0, nL)
