"""Criticality of the NTK (book ch. 9): exploding and vanishing gradients, and the learning-rate
scaling that keeps the NTK O(1) at any depth (the learning-rate equivalence principle, §9.2–9.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pdlt import _validation
from pdlt.activations import activation as make_activation
from pdlt.gaussian import expect
from pdlt.network import MLP, validate_inputs
from pdlt.theory.criticality import critical_point
from pdlt.theory.kernel import KERNEL
from pdlt.theory.layers import gram, propagate
from pdlt.theory.ntk import NTK_MEAN

Tensor = torch.Tensor


@dataclass(frozen=True, eq=False)
class NTKCriticality:
    """How the layers' parameters share the output NTK Θ^{(L)} (book §9.1, unrolled eq. 8.50).

    Attributes
    ----------
    contributions:
        float64 (depth, N, N): the part of Θ^{(L)} from the biases and weights of layer ℓ,
        [λ_b^{(ℓ)} + λ_W^{(ℓ)}⟨σσ⟩_{K^{(ℓ−1)}}] Π_{ℓ'=ℓ}^{L−1} C_W^{(ℓ'+1)}⟨σ'σ'⟩_{K^{(ℓ')}}; they sum
        to Θ^{(L)} exactly.
    chi_perp:
        float64 (depth − 1, N): χ_⊥^{(ℓ)} = C_W^{(ℓ+1)}⟨σ'²⟩_{K^{(ℓ)}} per layer ℓ = 1…L−1 and input.
    gradient_product:
        float64 (depth, N): Π_{ℓ'=ℓ}^{L−1} χ_⊥^{(ℓ')}, the mean squared Jacobian ∂z^{(L)}/∂z^{(ℓ)}.
    depth_scale:
        1/|log χ_⊥*|, with χ_⊥* the value χ_⊥ approaches deep in the network (the recursion is
        continued with the last layer's C_b, C_W to depth 1000): the number of layers over which
        gradients change by a factor e; inf at criticality. Compare it with the depth.
    regime:
        ``"exploding"`` (χ_⊥* > 1: the layers near the input dominate Θ) or ``"vanishing"``
        (χ_⊥* < 1: only layers near the output are trained) when χ_⊥ tends to a constant ≠ 1;
        ``"critical"`` when χ_⊥ → 1 as a power law: κ = ℓ|log χ_⊥| levels off (it tends to p_⊥ in
        the K*=0 class and is 0 in the scale-invariant class) instead of doubling between depth
        D/2 and D = max(1000, 2L), so gradients change as a power law, not exponentially
        (book §9.1).
    """

    contributions: np.ndarray
    chi_perp: np.ndarray
    gradient_product: np.ndarray
    depth_scale: float
    regime: str
    net: MLP
    x: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: χ_⊥ and gradient product (first input), share of Θ^{(L)}_{11}."""
        L = self.contributions.shape[0]
        c = self.contributions[:, 0, 0]
        chi = np.append(self.chi_perp[:, 0], np.nan)
        return pd.DataFrame(
            {
                "layer": np.arange(1, L + 1),
                "chi_perp": chi,
                "gradient_product": self.gradient_product[:, 0],
                "contribution": c,
                "share": c / c.sum(),
            }
        )

    def __repr__(self) -> str:
        return f"NTKCriticality(regime={self.regime!r}, depth_scale={self.depth_scale:.3g})"


_FAR_DEPTH = 1000
_GROWTH = 1.5  # κ(D)/κ(D/2) above which χ_⊥ is taken to tend to a constant ≠ 1


_FAR_DEPTH = 1000
_GROWTH = 1.5  # κ(D)/κ(D/2) above which χ_⊥ is taken to tend to a constant ≠ 1


def _asymptotic_chi_perp(net: MLP, K_diag: Tensor) -> tuple[Tensor, Tensor, bool]:
    """κ(ℓ) = ℓ·|log χ_⊥^{(ℓ)}| deep in the network, at ℓ = D/2 and D = max(1000, 2L): the
    single-input kernel recursion continued from K^{(L)} with the last layer's C_b, C_W. Returns
    (κ(D/2), χ_⊥^{(D)}, whether K left the float range first) per input. At criticality χ_⊥
    approaches 1 as a power law (κ tends to a constant, p_⊥ in the K*=0 class); off it χ_⊥
    tends to a constant ≠ 1 and κ grows ∝ ℓ."""
    act, C_b, C_W = net.activation, net.C_b[-1], net.C_W[-1]
    far = max(_FAR_DEPTH, 2 * net.depth)
    if act.homogeneous is not None:  # χ_⊥ = C_W (a₊² + a₋²)/2 at every K (book §5.2)
        a_p, a_m = act.homogeneous
        chi = torch.full_like(K_diag, C_W * (a_p**2 + a_m**2) / 2)
        return far / 2 * torch.log(chi).abs(), chi, False

    def chi_at(K: Tensor) -> Tensor:
        return C_W * expect(lambda z: act.d1(z) ** 2, K, kinks=act.kinks)

    # the single-input map K ↦ C_b + C_W ⟨σ²⟩_K (book §5.1) iterated for all inputs at once; a
    # map iteration of N scalars, far cheaper than walking N×N kernels a thousand layers deep
    K, ell, K_half = K_diag.clone(), net.depth, None
    while ell < far:
        if ell == far // 2:
            K_half = K
        nxt = C_b + C_W * expect(lambda z: act(z) ** 2, K, kinks=act.kinks)
        if not torch.isfinite(nxt).all() or float(nxt.max()) > 1e100:
            return torch.zeros_like(K), chi_at(K), True
        K, ell = nxt, ell + 1
    K_half = K if K_half is None else K_half
    return far // 2 * torch.log(chi_at(K_half)).abs(), chi_at(K), False


def ntk_criticality(net: MLP, x: np.ndarray | Tensor) -> NTKCriticality:
    """Exploding/vanishing-gradient diagnosis from the NTK recursion (book §9.1).

    Θ^{(L)} is a sum over layers of each layer's own contribution times the product of χ_⊥ of
    the layers above it. Off criticality (χ_⊥ → χ_⊥* ≠ 1) that product is exponential in depth,
    so one end of the network dominates the NTK and the other is not trained; at criticality it
    is a power law (K* = 0 class) or exactly 1 (scale-invariant class).

    Examples
    --------
    >>> pdlt.ntk_criticality(pdlt.MLP("tanh", 30, 64, 4, C_W=1.5), np.ones((1, 4))).regime
    'exploding'
    """
    xt = validate_inputs(net, x)
    walk = propagate(net, gram(xt), [NTK_MEAN], keep_moments=True)
    L = net.depth
    # χ^{(ℓ)}_{δ1δ2} = C_W^{(ℓ+1)} ⟨σ'σ'⟩_{K^{(ℓ)}}: the factor multiplying Θ^{(ℓ)} in §8.2
    chi = [net.C_W[ell] * walk.moments[ell - 1].dd for ell in range(1, L)]
    own = [walk.states[0].Theta]
    own += [
        net.lambda_b[ell - 1] + net.lambda_W[ell - 1] * walk.moments[ell - 2].ss
        for ell in range(2, L + 1)
    ]
    N = xt.shape[0]
    prod = torch.ones((N, N), dtype=torch.float64)
    products = [prod]
    for c in reversed(chi):
        prod = prod * c
        products.append(prod)
    products = products[::-1]  # products[ℓ-1] = Π_{ℓ'=ℓ}^{L−1} χ^{(ℓ')}
    contributions = torch.stack([o * p for o, p in zip(own, products, strict=True)])
    idx = torch.arange(N)
    chi_perp = torch.stack([c[idx, idx] for c in chi]) if chi else torch.empty((0, N))
    gprod = torch.stack([p[idx, idx] for p in products])
    far = max(_FAR_DEPTH, 2 * L)
    kappa_half, chi_far, escaped = _asymptotic_chi_perp(net, torch.diagonal(walk.states[-1].K))
    kappa_far = far * torch.log(chi_far).abs()
    # exponential (off-critical) when κ keeps growing ∝ ℓ between D/2 and D (ratio 2), power law
    # (critical) when it levels off (ratio 1); K leaving the float range is exponential
    growing = escaped | (kappa_far > _GROWTH * kappa_half)
    off = growing & (kappa_far > 1e-9)
    if bool(off.any()):
        worst = int(torch.argmax(torch.where(off, torch.log(chi_far).abs(), -1.0)))
        scale = float(1 / torch.log(chi_far[worst]).abs())
        regime = "exploding" if float(chi_far[worst]) > 1 else "vanishing"
    else:
        scale, regime = float("inf"), "critical"
    return NTKCriticality(
        contributions=contributions.numpy(),
        chi_perp=chi_perp.numpy(),
        gradient_product=gprod.numpy(),
        depth_scale=scale,
        regime=regime,
        net=net,
        x=xt.numpy(),
    )


@dataclass(frozen=True, eq=False)
class LearningRates:
    """Per-layer learning rates λ_b^{(ℓ)}, λ_W^{(ℓ)} (book convention, weights λ_W/n_{ℓ−1}).

    Use them as ``MLP(..., lambda_b=lr.lambda_b, lambda_W=lr.lambda_W)`` or ``lr.apply(net)``.

    Attributes
    ----------
    lambda_b, lambda_W:
        One value per layer ℓ = 1…L.
    universality_class:
        The activation's class, as :func:`pdlt.universality_class` gives it.
    method:
        ``"book"`` (the class formula of §9.2–9.4) or ``"numerical"`` (equal contributions
        computed for the given C_W, C_b and input norm).
    p_perp:
        The critical exponent p_⊥ of χ_⊥ ≈ 1 − p_⊥/ℓ (K*=0 class), 0 for scale-invariant; None
        for the numerical rule.
    """

    lambda_b: tuple[float, ...]
    lambda_W: tuple[float, ...]
    activation: str
    universality_class: str
    p_perp: float | None
    method: str = "book"

    def apply(self, net: MLP) -> MLP:
        """A copy of ``net`` with these learning rates."""
        if net.depth != len(self.lambda_b):
            raise ValueError(
                f"these learning rates are for depth {len(self.lambda_b)}, net has {net.depth}"
            )
        return net.with_(lambda_b=self.lambda_b, lambda_W=self.lambda_W)

    def to_frame(self) -> pd.DataFrame:
        L = len(self.lambda_b)
        return pd.DataFrame(
            {"layer": np.arange(1, L + 1), "lambda_b": self.lambda_b, "lambda_W": self.lambda_W}
        )


def learning_rates(
    activation,
    depth: int,
    *,
    lambda_b: float = 1.0,
    lambda_W: float = 1.0,
    method: str = "auto",
    C_W: float | None = None,
    C_b: float = 0.0,
    input_norm: float = 1.0,
) -> LearningRates:
    """Per-layer learning rates that make the NTK Θ^{(L)} depth independent (book §9.2–9.4).

    The *learning-rate equivalence principle*: choose λ^{(ℓ)} so that every layer contributes
    the same order, ∝ 1/L, to Θ^{(L)} (02-ntk.md §4.1). With λ̃_b = ``lambda_b``, λ̃_W =
    ``lambda_W``:

    - scale-invariant class (ReLU, leaky ReLU, linear; χ_⊥ ≡ 1):
      λ_b^{(ℓ)} = λ̃_b/L, λ_W^{(ℓ)} = λ̃_W/L;
    - K*=0 class (tanh, sin, erf; χ_⊥ ≈ 1 − p_⊥/ℓ):
      λ_b^{(ℓ)} = λ̃_b L^{p_⊥−1}/ℓ^{p_⊥}, λ_W^{(ℓ)} = λ̃_W (L/ℓ)^{p_⊥−1} (tanh: λ̃_b/ℓ, λ̃_W);
    - ``method="numerical"`` (any activation, any C_W, C_b): from the single-input recursion at
      |x|²/n_0 = ``input_norm``, λ_b^{(ℓ)} = λ̃_b/(L Π_ℓ) and λ_W^{(ℓ)} = λ̃_W/(L Π_ℓ ⟨σ²⟩_{K^{(ℓ−1)}})
      with Π_ℓ = Π_{ℓ'≥ℓ} χ_⊥^{(ℓ')}, so each layer contributes exactly (λ̃_b + λ̃_W)/L.

    ``method="auto"`` uses the book's class formula where the activation has one (the
    scale-invariant and K*=0 classes of :func:`pdlt.critical_point`, ELU and SELU included),
    else the numerical rule (then ``C_W`` is required).

    Examples
    --------
    >>> pdlt.learning_rates("tanh", depth=4).lambda_b
    (1.0, 0.5, 0.3333333333333333, 0.25)
    """
    act = make_activation(activation)
    L = _validation.integer("depth", depth, min=1)
    lambda_b = _validation.non_negative("lambda_b", lambda_b)
    lambda_W = _validation.non_negative("lambda_W", lambda_W)
    if not isinstance(method, str) or method not in ("auto", "book", "numerical"):
        raise ValueError(f"method must be 'auto', 'book' or 'numerical', got {method!r}")
    # the numerical rule's network: checked here, whichever rule ends up used
    C_W = None if C_W is None else _validation.positive("C_W", C_W)
    C_b = _validation.non_negative("C_b", C_b)
    input_norm = _validation.positive("input_norm", input_norm)
    cp = critical_point(act)
    cls, p = cp.universality_class, cp.p_perp
    has_formula = cls == "scale-invariant" or (cls == "K*=0" and p is not None)
    if method == "book" and not has_formula:
        raise ValueError(
            f"activation {act.name!r} ({cls!r} class) is in neither the scale-invariant nor the "
            "K*=0 class, for which the book derives the learning-rate scaling (eq. 9.94–9.95); "
            "use method='numerical' with its C_W"
        )
    ell = np.arange(1, L + 1, dtype=float)
    if method != "numerical" and cls == "scale-invariant":  # eq. 9.94
        rule = "book"
        lb, lw = np.full(L, lambda_b / L), np.full(L, lambda_W / L)
    elif method != "numerical" and has_formula:  # K*=0, eq. 9.95
        rule = "book"
        lb = lambda_b * L ** (p - 1) / ell**p
        lw = lambda_W * (L / ell) ** (p - 1)
    else:
        if C_W is None:
            raise ValueError(
                f"the numerical learning-rate rule for {act.name!r} needs the network's C_W "
                "(and C_b) to follow its gradients"
            )
        rule, p = "numerical", None
        lb, lw = _equal_contribution_rates(act, L, lambda_b, lambda_W, C_W, C_b, input_norm)
    return LearningRates(
        lambda_b=tuple(float(v) for v in lb),
        lambda_W=tuple(float(v) for v in lw),
        activation=act.name,
        universality_class=cls,
        p_perp=p,
        method=rule,
    )


def _equal_contribution_rates(act, L, lambda_b, lambda_W, C_W, C_b, input_norm):
    """λ's giving every layer the share (λ̃_b + λ̃_W)/L of Θ^{(L)} for one input of norm q."""
    one = MLP(act, L, 1, 1, C_W=C_W, C_b=C_b)
    walk = propagate(
        one, torch.tensor([[float(input_norm)]], dtype=torch.float64), [KERNEL], keep_moments=True
    )
    # ⟨σ²⟩ of layer ℓ−1 (x·x/n_0 for ℓ = 1) and χ_⊥^{(ℓ)} = C_W ⟨σ'²⟩ (ℓ = 1…L−1)
    sigma2 = [float(input_norm)] + [float(m.ss[0, 0]) for m in walk.moments]
    chis = [C_W * float(m.dd[0, 0]) for m in walk.moments]
    prods = np.cumprod(np.array(chis[::-1] or [1.0]))[::-1]
    prods = np.append(prods, 1.0)[-L:] if L > 1 else np.array([1.0])
    if not np.all(np.isfinite(prods)) or np.any(prods <= 0) or min(sigma2) <= 0:
        raise FloatingPointError(
            "gradients vanish or overflow; the numerical rule cannot balance them"
        )
    lb = lambda_b / (L * prods)
    lw = lambda_W / (L * prods * np.asarray(sigma2))
    return lb, lw
