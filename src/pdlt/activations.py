"""Activation functions: the function, its derivatives, and closed-form Gaussian expectations.

One :class:`Activation` object serves both sides of pdlt: the experiment applies ``act(z)`` to
real preactivations, the theory asks for ``⟨σ^{(i)}(z_a) σ^{(j)}(z_b)⟩_K`` over a kernel. Where a
closed form exists (book §5.2 and the arc-cosine kernels of Cho & Saul for the scale-invariant
family; erf; sin/cos) it is registered on the activation; everything else falls back to the
quadrature ladder of :mod:`pdlt.gaussian`.

Built-ins (``pdlt.activation(name, **params)``):

==============  ========================================  ===================  ============
name            σ(z)                                      parameters           closed forms
==============  ========================================  ===================  ============
linear          z                                                              (0,0) (1,1)
relu            max(z, 0)                                                      (0,0) (1,1)
leaky_relu      z (z ≥ 0), slope·z (z < 0)                slope=0.01           (0,0) (1,1)
tanh            tanh z
sin, cos        sin z, cos z                                                   (0,0) (1,1)
erf             erf z                                                          (0,0) (1,1)
sigmoid         1/(1 + e^{-z})
softplus        log(1 + e^z)
swish (silu)    z·sigmoid(z)
gelu            z·Φ(z)  (exact, erf form)                                      (0,0) (1,1)
elu             z (z ≥ 0), alpha·(e^z − 1) (z < 0)        alpha=1.0
selu            scale·elu(z; alpha) with the SELU constants
==============  ========================================  ===================  ============

Any callable acting elementwise on torch tensors becomes an Activation; its derivatives are
taken by autograd unless given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

import torch

from pdlt import _validation

Tensor = torch.Tensor
TorchFn = Callable[[Tensor], Tensor]
# A closed form takes the entries (K_aa, K_bb, K_ab) of a 2x2 kernel, broadcast against each
# other, and optionally ``shared`` (a dict of intermediates the family's forms share on one
# kernel), and returns ⟨σ^{(i)}(z_a) σ^{(j)}(z_b)⟩.
ClosedForm = Callable[..., Tensor]

_SQRT2 = math.sqrt(2.0)
_ONE = torch.ones((), dtype=torch.float64)  # for 1 − x² as one addcmul
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True, eq=False)
class Activation:
    """An elementwise nonlinearity σ with what the theory needs to know about it.

    Attributes
    ----------
    name:
        Registry name, or the user's function name.
    fn:
        σ itself, elementwise on torch tensors.
    d1, d2:
        σ' and σ'' (elementwise). For kinked activations these are the derivatives almost
        everywhere; the distributional parts at the kinks are *not* included.
    d3:
        σ''' (same convention), or None: then :meth:`derivative` takes it by autograd of σ''
        (zero for the scale-invariant family).
    kinks:
        Points where σ or one of its first two derivatives is not smooth. Quadrature splits
        its intervals there, which restores exponential convergence.
    homogeneous:
        ``(a_plus, a_minus)`` for the scale-invariant family σ(z) = a₊z (z≥0), a₋z (z<0), else
        None. Detected for user callables too (σ(λz) = λσ(z) for λ > 0), which then get the
        family's closed forms: a ReLU written as a lambda is a ReLU.
    closed_forms:
        ``{(i, j): f(K_aa, K_bb, K_ab)}`` giving ⟨σ^{(i)}(z_a) σ^{(j)}(z_b)⟩ exactly.
    params:
        The parameters the activation was built with.
    """

    name: str
    fn: TorchFn
    d1: TorchFn
    d2: TorchFn
    kinks: tuple[float, ...] = ()
    homogeneous: tuple[float, float] | None = None
    closed_forms: Mapping[tuple[int, int], ClosedForm] = field(
        default_factory=lambda: MappingProxyType({})
    )
    params: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    builtin: bool = True
    d3: TorchFn | None = None

    def __call__(self, z: Tensor) -> Tensor:
        return self.fn(z)

    def derivative(self, order: int) -> TorchFn:
        """σ^{(order)} for order 0…3 (σ''' is needed by the ddNTK recursions, book §∞.3)."""
        if order == 0:
            return self.fn
        if order == 1:
            return self.d1
        if order == 2:
            return self.d2
        if order == 3:
            if self.d3 is not None:
                return self.d3
            if self.homogeneous is not None:
                return torch.zeros_like
            if isinstance(self.d2, _AutogradDerivative):  # its output is detached: go to σ
                return _AutogradDerivative(self.d2.f, 3)
            return _AutogradDerivative(self.d2, 1)
        raise ValueError(f"derivative order must be 0, 1, 2 or 3, got {order!r}")

    @property
    def smooth(self) -> bool:
        return not self.kinks

    # ---- the facts the theory classifies σ by (book §5.2–5.3), computed once -----------------

    def derivatives_at_zero(self, order: int) -> tuple[float, ...]:
        """σ^{(p)}(0) for p = 0…order by nested autograd (float64 round-off). At a kink at 0
        these are autograd's one-sided choice."""
        with torch.enable_grad():
            z = torch.zeros((), dtype=torch.float64, requires_grad=True)
            y = self.fn(z)
            out = [float(y.detach())]
            for _ in range(order):
                if not y.requires_grad:
                    out.append(0.0)
                    continue
                (y,) = torch.autograd.grad(y, z, create_graph=True, allow_unused=True)
                if y is None:
                    y = torch.zeros((), dtype=torch.float64)
                out.append(float(y.detach()))
        return tuple(out)

    @cached_property
    def taylor(self) -> tuple[float, ...] | None:
        """σ_p = σ^{(p)}(0) for p = 0…5, which decide the K* = 0 class (book §5.3.3); None when
        σ has a kink at 0 (one-sided, not meaningful)."""
        return None if 0.0 in self.kinks else self.derivatives_at_zero(5)

    @cached_property
    def slopes_at_zero(self) -> tuple[float, float]:
        """One-sided slopes σ'(0⁺), σ'(0⁻) (equal for σ smooth at 0)."""
        eps = torch.tensor([1e-150, -1e-150], dtype=torch.float64)
        with torch.no_grad():
            d = self.d1(eps)
        return float(d[0]), float(d[1])

    @cached_property
    def odd(self) -> bool:
        """σ(−z) = −σ(z) (linear, tanh, sin, erf, …), checked on a grid in float64. Odd σ keep
        each neuron's sign symmetry through residual layers (book App. B), so the odd cumulants
        of a residual network vanish; a non-odd σ gives them at O(1/n)."""
        z = torch.linspace(0.01, 6.0, 64, dtype=torch.float64)
        with torch.no_grad():
            return bool(torch.allclose(self.fn(-z), -self.fn(z), rtol=1e-10, atol=1e-12))

    @property
    def A2(self) -> float | None:
        """(a₊² + a₋²)/2 for the scale-invariant family (book §5.2), else None."""
        if self.homogeneous is None:
            return None
        a, b = self.homogeneous
        return (a * a + b * b) / 2

    @property
    def A4(self) -> float | None:
        """(a₊⁴ + a₋⁴)/2 for the scale-invariant family (book §5.2), else None."""
        if self.homogeneous is None:
            return None
        a, b = self.homogeneous
        return (a**4 + b**4) / 2

    def __reduce__(self):
        # Closures and mapping proxies do not pickle: rebuild from the spec instead, so MLPs
        # travel to worker processes and survive copy.deepcopy / sklearn.clone.
        if self.builtin:
            return (_rebuild_builtin, (self.name, dict(self.params)))
        return (
            _rebuild_callable,
            (
                self.fn,
                self.d1,
                self.d2,
                self.kinks,
                self.name,
                {} if self.homogeneous is not None else dict(self.closed_forms),
                self.homogeneous,
            ),
        )

    def __deepcopy__(self, memo: dict) -> Activation:
        return self  # immutable

    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"Activation({self.name!r}{', ' + p if p else ''})"


# --------------------------------------------------------------------------------------------
# closed forms
#
# A layer step asks for ⟨σσ⟩ and then ⟨σ'σ'⟩ on the same kernel, and both forms of a family
# rest on the same intermediates (the angle θ of the arc-cosine family, erf's normalized
# covariance, gelu's det(1 + K) and its atan2): ``shared``, a dict that lives as long as one
# kernel (:class:`pdlt.gaussian.LayerMoments`), holds them so each is computed once. The forms
# work in place on their own temporaries: they are the hot path of every closed-form kernel
# (N² entries per layer). K_ab carries the full shape; K_aa and K_bb broadcast against it.


def _cached(shared: dict | None, key: str, make: Callable[[], object]) -> object:
    """``shared[key]``, made by ``make()`` the first time; no caching when ``shared`` is None.
    Cached tensors are read, never modified in place."""
    if shared is None:
        return make()
    if key not in shared:
        shared[key] = make()
    return shared[key]


def _per_input(kaa: Tensor, kbb: Tensor, f: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """(f(K_aa), f(K_bb)) for a per-input transform f: computed once when K_bb is K_aa
    transposed (the columns and rows of one kernel's diagonal, as :func:`pair_expectation`
    passes them): at small N the per-op cost, not the O(N) arithmetic, is what counts."""
    fa = f(kaa)
    same = (
        kaa.dim() == 2
        and kaa.shape[1] == 1
        and kbb.shape == kaa.shape[::-1]
        and kbb.data_ptr() == kaa.data_ptr()
        and kbb.stride(1) == kaa.stride(0)
    )
    return fa, (fa.mT if same else f(kbb))


def _cos_theta(
    kaa: Tensor, kbb: Tensor, kab: Tensor, shared: dict | None = None
) -> tuple[Tensor, Tensor]:
    """(sqrt(K_aa K_bb), cos θ) with the 0/0 of a zero-variance input mapped to cos θ = 0."""

    def make() -> tuple[Tensor, Tensor]:
        # √(K_aa K_bb), not √K_aa √K_bb: on the diagonal it is then K_aa to the last bit, so
        # cos θ = 1 and θ = 0 exactly there (one ulp off would move θ by ~1e-8)
        norm = torch.mul(kaa, kbb).clamp_(min=0.0).sqrt_()
        if kaa.min().item() > 0 and kbb.min().item() > 0:  # N + N checks, not N²
            return norm, torch.div(kab, norm).clamp_(-1.0, 1.0)
        ok = norm > 0
        cos = torch.where(ok, kab / torch.where(ok, norm, 1.0), torch.zeros_like(kab))
        return norm, cos.clamp_(-1.0, 1.0)

    return _cached(shared, "cos_theta", make)  # type: ignore[return-value]


def _theta(kaa: Tensor, kbb: Tensor, kab: Tensor, shared: dict | None = None) -> Tensor:
    """The angle θ = arccos(K_ab/√(K_aa K_bb)) ∈ [0, π] between two inputs."""
    return _cached(  # type: ignore[return-value]
        shared, "theta", lambda: torch.arccos(_cos_theta(kaa, kbb, kab, shared)[1])
    )


def _arccos1(
    kaa: Tensor, kbb: Tensor, kab: Tensor, shared: dict | None = None, scale: float = 1.0
) -> Tensor:
    """ReLU arc-cosine kernel of degree 1: ⟨relu(z_a) relu(z_b)⟩ = √(K_aa K_bb)/2π [sin θ + (π−θ) cos θ]
    (times ``scale``)."""
    norm, cos = _cos_theta(kaa, kbb, kab, shared)
    out = torch.sub(math.pi, _theta(kaa, kbb, kab, shared)).mul_(cos)  # (π − θ) cos θ
    # sin θ = √(1 − cos²θ); cos² ≤ 1 in floating point for |cos| ≤ 1, so no clamp is needed
    out.add_(torch.addcmul(_ONE, cos, cos, value=-1.0).sqrt_())
    return out.mul_(norm).mul_(scale / (2 * math.pi))


def _homogeneous_forms(a_plus: float, a_minus: float) -> dict[tuple[int, int], ClosedForm]:
    """Closed forms for σ(z) = a₊z (z≥0), a₋z (z<0) (book §5.2; Cho & Saul 2009)."""
    d = (a_plus - a_minus) ** 2
    ab = a_plus * a_minus

    def f00(kaa: Tensor, kbb: Tensor, kab: Tensor, shared: dict | None = None) -> Tensor:
        out = _arccos1(kaa, kbb, kab, shared, scale=d)
        return out.add_(kab, alpha=ab) if ab != 0.0 else out

    def f11(kaa: Tensor, kbb: Tensor, kab: Tensor, shared: dict | None = None) -> Tensor:
        # P(z_a, z_b same sign) = (π − θ)/π, opposite sign θ/π.
        theta = _theta(kaa, kbb, kab, shared)
        out = torch.sub(math.pi, theta).mul_((a_plus**2 + a_minus**2) / (2 * math.pi))
        return out.add_(theta, alpha=ab / math.pi) if ab != 0.0 else out

    return {(0, 0): f00, (1, 1): f11}


def _erf_forms() -> dict[tuple[int, int], ClosedForm]:
    """⟨erf erf⟩ = (2/π) arcsin(u) and ⟨erf' erf'⟩ = (4/π)/√det(1 + 2K)
    = (2/π) r_a r_b / √(1 − u²), with r = 1/√(½ + K) and u = K_ab r_a r_b
    = 2K_ab/√((1 + 2K_aa)(1 + 2K_bb))."""

    def parts(kaa: Tensor, kbb: Tensor, kab: Tensor, shared: dict | None) -> tuple:
        def make() -> tuple[Tensor, Tensor, Tensor]:
            # r_a, r_b: broadcast vectors, O(N)
            ra, rb = _per_input(kaa, kbb, lambda k: torch.add(k, 0.5).rsqrt_())
            return ra, rb, torch.mul(kab, ra).mul_(rb)

        return _cached(shared, "erf_u", make)  # type: ignore[return-value]

    def f00(kaa: Tensor, kbb: Tensor, kab: Tensor, shared: dict | None = None) -> Tensor:
        u = parts(kaa, kbb, kab, shared)[2]
        return torch.clamp(u, -1.0, 1.0).arcsin_().mul_(2 / math.pi)

    def f11(kaa: Tensor, kbb: Tensor, kab: Tensor, shared: dict | None = None) -> Tensor:
        # erf' = (2/√π) e^{-z²}: a Gaussian integral of exp(-z_a² - z_b²).
        ra, rb, u = parts(kaa, kbb, kab, shared)
        # 1 − u² ≥ (1 + 2K_aa + 2K_bb)/((1 + 2K_aa)(1 + 2K_bb)) > 0 for a PSD block
        # sqrt and div, not rsqrt: torch's float64 rsqrt is ~3× slower than sqrt
        root = torch.addcmul(_ONE, u, u, value=-1.0).sqrt_()
        return torch.div(ra * (2 / math.pi), root).mul_(rb)

    return {(0, 0): f00, (1, 1): f11}


def _trig_forms(kind: str) -> dict[tuple[int, int], ClosedForm]:
    """⟨sin sin⟩ = e^{-(K_aa+K_bb)/2} sinh K_ab, ⟨cos cos⟩ = e^{-(K_aa+K_bb)/2} cosh K_ab."""

    def ss(kaa: Tensor, kbb: Tensor, kab: Tensor, shared: dict | None = None) -> Tensor:
        return torch.exp(-(kaa + kbb) / 2) * torch.sinh(kab)

    def cc(kaa: Tensor, kbb: Tensor, kab: Tensor, shared: dict | None = None) -> Tensor:
        return torch.exp(-(kaa + kbb) / 2) * torch.cosh(kab)

    # sin' = cos and cos' = −sin, so (1,1) swaps the two and the sign squares away.
    return {(0, 0): ss, (1, 1): cc} if kind == "sin" else {(0, 0): cc, (1, 1): ss}


def _gelu_forms() -> dict[tuple[int, int], ClosedForm]:
    """Closed forms for σ(z) = zΦ(z) (derived by Gaussian integration by parts, E[z_a f] =
    Σ_c K_ac E[∂_c f], from three elementary integrals over the 2×2 kernel (a, b, c) =
    (K_aa, K_bb, K_ab), with P = (1+a)(1+b) and D = det(1 + K) = P − c²):

    * ⟨Φ_aΦ_b⟩ = P(u ≤ z_a, v ≤ z_b) for independent unit u, v = ¼ + arcsin(c/√P)/2π
      = atan2(√D, −c)/2π (the atan2 form keeps full relative accuracy at c/√P → ±1);
    * ⟨φ_aφ_b⟩ = 1/(2π√D);
    * ⟨z_aφ_aΦ_b⟩ = c ⟨φ_aφ_b⟩/(1+a), ⟨z_az_bφ_aφ_b⟩ = c/(2π D^{3/2}).

    Then ⟨σ_aσ_b⟩ = c⟨Φ_aΦ_b⟩ + (abD + c²)/(2π P √D) and, with σ' = Φ + zφ,
    ⟨σ'_aσ'_b⟩ = ⟨Φ_aΦ_b⟩ + c/(2π√D) [1/(1+a) + 1/(1+b)] + c/(2π D^{3/2}).
    (The same kernel as neural-tangents' analytic ``stax.Gelu``.) D ≥ 1 + a + b > 0 for any
    positive semi-definite K, so neither form has a singular point.
    """
    inv_2pi = 1.0 / (2 * math.pi)

    def parts(kaa: Tensor, kbb: Tensor, kab: Tensor, shared: dict | None) -> tuple:
        def make() -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
            ia, ib = _per_input(kaa, kbb, lambda k: torch.add(k, 1.0).reciprocal_())  # O(N)
            D = torch.mul(kab, kab).neg_().addcmul_(1 + kaa, 1 + kbb).clamp_(min=1.0)  # P − c²
            sqrtD = D.sqrt()
            angle = torch.atan2(sqrtD, kab.neg())  # atan2(√D, −c)
            inv_sqrtD = sqrtD.reciprocal_()  # sqrt + reciprocal: float64 rsqrt is slower
            return ia, ib, D, inv_sqrtD, angle

        return _cached(shared, "gelu_det", make)  # type: ignore[return-value]

    def f00(kaa: Tensor, kbb: Tensor, kab: Tensor, shared: dict | None = None) -> Tensor:
        ia, ib, D, inv_sqrtD, angle = parts(kaa, kbb, kab, shared)
        # (abD + c²)/(P√D) + c·atan2, with 1/P = ia·ib
        out = torch.mul(D, kaa).mul_(kbb).addcmul_(kab, kab).mul_(inv_sqrtD).mul_(ia).mul_(ib)
        return out.addcmul_(angle, kab).mul_(inv_2pi)

    def f11(kaa: Tensor, kbb: Tensor, kab: Tensor, shared: dict | None = None) -> Tensor:
        ia, ib, D, inv_sqrtD, angle = parts(kaa, kbb, kab, shared)
        # atan2 + c/√D [1/(1+a) + 1/(1+b) + 1/D]
        out = torch.reciprocal(D).add_(ia).add_(ib).mul_(inv_sqrtD).mul_(kab)
        return out.add_(angle).mul_(inv_2pi)

    return {(0, 0): f00, (1, 1): f11}


def _linear_forms() -> dict[tuple[int, int], ClosedForm]:
    return {
        (0, 0): lambda kaa, kbb, kab, shared=None: kab.clone(),
        (1, 1): lambda kaa, kbb, kab, shared=None: torch.ones_like(kab),
    }


# --------------------------------------------------------------------------------------------
# built-in activations


def _phi(z: Tensor) -> Tensor:
    return torch.exp(-0.5 * z * z) * _INV_SQRT_2PI


def _Phi(z: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(z / _SQRT2))


def _freeze(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))


def _homogeneous(name: str, a_plus: float, a_minus: float, **params: float) -> Activation:
    forms = _family_forms((a_plus, a_minus))
    kinks = () if a_plus == a_minus else (0.0,)

    if a_minus == 0.0:
        # ReLU as z + relu(−z): the same values and the same autograd slope a₊ at z = 0 as
        # the torch.where form below, ~5× faster forward and backward on CPU (measured), which
        # dominated ReLU training.
        def fn(z: Tensor) -> Tensor:
            r = z + torch.relu(-z)
            return r if a_plus == 1.0 else a_plus * r
    else:

        def fn(z: Tensor) -> Tensor:
            return torch.where(z >= 0, a_plus * z, a_minus * z)

    def d1(z: Tensor) -> Tensor:
        # At the kink itself take the mean slope: then the closed forms, which treat a
        # zero-variance input as z ≡ 0, agree with direct evaluation.
        mid = torch.full_like(z, (a_plus + a_minus) / 2)
        return torch.where(z > 0, a_plus, torch.where(z < 0, a_minus, mid))

    return Activation(
        name=name,
        fn=fn,
        d1=d1,
        d2=torch.zeros_like,
        d3=torch.zeros_like,
        kinks=kinks,
        homogeneous=(a_plus, a_minus),
        closed_forms=_freeze(forms),
        params=_freeze(params),
    )


def _linear() -> Activation:
    return _homogeneous("linear", 1.0, 1.0)


def _relu() -> Activation:
    return _homogeneous("relu", 1.0, 0.0)


def _leaky_relu(slope: float = 0.01) -> Activation:
    slope = _validation.real("leaky_relu slope", slope)
    return _homogeneous("leaky_relu", 1.0, slope, slope=slope)


def _tanh() -> Activation:
    def d1(z: Tensor) -> Tensor:
        return 1 - torch.tanh(z) ** 2

    def d2(z: Tensor) -> Tensor:
        t = torch.tanh(z)
        return -2 * t * (1 - t * t)

    def d3(z: Tensor) -> Tensor:
        t = torch.tanh(z)
        return (6 * t * t - 2) * (1 - t * t)

    return Activation("tanh", torch.tanh, d1, d2, d3=d3)


def _sin() -> Activation:
    return Activation(
        "sin",
        torch.sin,
        torch.cos,
        lambda z: -torch.sin(z),
        d3=lambda z: -torch.cos(z),
        closed_forms=_freeze(_trig_forms("sin")),
    )


def _cos() -> Activation:
    return Activation(
        "cos",
        torch.cos,
        lambda z: -torch.sin(z),
        lambda z: -torch.cos(z),
        d3=torch.sin,
        closed_forms=_freeze(_trig_forms("cos")),
    )


def _erf() -> Activation:
    c = 2 / math.sqrt(math.pi)
    return Activation(
        "erf",
        torch.erf,
        lambda z: c * torch.exp(-z * z),
        lambda z: -2 * z * c * torch.exp(-z * z),
        d3=lambda z: c * (4 * z * z - 2) * torch.exp(-z * z),
        closed_forms=_freeze(_erf_forms()),
    )


def _sigmoid() -> Activation:
    def d1(z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        return s * (1 - s)

    def d2(z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        return s * (1 - s) * (1 - 2 * s)

    def d3(z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        return s * (1 - s) * (1 - 6 * s + 6 * s * s)

    return Activation("sigmoid", torch.sigmoid, d1, d2, d3=d3)


def _softplus() -> Activation:
    def d2(z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        return s * (1 - s)

    def d3(z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        return s * (1 - s) * (1 - 2 * s)

    return Activation("softplus", torch.nn.functional.softplus, torch.sigmoid, d2, d3=d3)


def _swish() -> Activation:
    def d1(z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        return s + z * s * (1 - s)

    def d2(z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        return s * (1 - s) * (2 + z * (1 - 2 * s))

    def d3(z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        p = s * (1 - s)
        return 3 * p * (1 - 2 * s) + z * p * (1 - 6 * s + 6 * s * s)

    return Activation("swish", torch.nn.functional.silu, d1, d2, d3=d3)


def _gelu() -> Activation:
    return Activation(
        "gelu",
        lambda z: z * _Phi(z),
        lambda z: _Phi(z) + z * _phi(z),
        lambda z: _phi(z) * (2 - z * z),
        d3=lambda z: z * _phi(z) * (z * z - 4),
        closed_forms=_freeze(_gelu_forms()),
    )


def _elu_parts(alpha: float, scale: float) -> tuple[TorchFn, TorchFn, TorchFn]:
    def fn(z: Tensor) -> Tensor:
        return scale * torch.where(z >= 0, z, alpha * torch.expm1(torch.clamp(z, max=0.0)))

    def d1(z: Tensor) -> Tensor:
        return scale * torch.where(
            z >= 0, torch.ones_like(z), alpha * torch.exp(torch.clamp(z, max=0.0))
        )

    def d2(z: Tensor) -> Tensor:
        return scale * torch.where(
            z >= 0, torch.zeros_like(z), alpha * torch.exp(torch.clamp(z, max=0.0))
        )

    return fn, d1, d2  # and σ''' = σ'' (the exponential branch; 0 for z ≥ 0)


def _elu(alpha: float = 1.0) -> Activation:
    alpha = _validation.real("elu alpha", alpha)
    fn, d1, d2 = _elu_parts(alpha, 1.0)
    return Activation(
        "elu", fn, d1, d2, kinks=(0.0,), params=_freeze({"alpha": float(alpha)}), d3=d2
    )


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _selu() -> Activation:
    fn, d1, d2 = _elu_parts(_SELU_ALPHA, _SELU_SCALE)
    return Activation("selu", fn, d1, d2, kinks=(0.0,), d3=d2)


_REGISTRY: Mapping[str, Callable[..., Activation]] = MappingProxyType(
    {
        "linear": _linear,
        "relu": _relu,
        "leaky_relu": _leaky_relu,
        "tanh": _tanh,
        "sin": _sin,
        "cos": _cos,
        "erf": _erf,
        "sigmoid": _sigmoid,
        "softplus": _softplus,
        "swish": _swish,
        "gelu": _gelu,
        "elu": _elu,
        "selu": _selu,
    }
)
_ALIASES = MappingProxyType({"silu": "swish", "identity": "linear", "leakyrelu": "leaky_relu"})

BUILTIN_ACTIVATIONS: tuple[str, ...] = tuple(_REGISTRY)


def _rebuild_builtin(name: str, params: dict) -> Activation:
    return _REGISTRY[name](**params)


def _rebuild_callable(fn, d1, d2, kinks, name, closed_forms, homogeneous=None) -> Activation:
    if homogeneous is not None:  # the family's forms are closures: rebuilt, not pickled
        closed_forms = _family_forms(homogeneous)
    return Activation(
        name=name,
        fn=fn,
        d1=d1,
        d2=d2,
        kinks=kinks,
        homogeneous=homogeneous,
        closed_forms=MappingProxyType(dict(closed_forms)),
        builtin=False,
    )


def _family_forms(hom: tuple[float, float]) -> dict[tuple[int, int], ClosedForm]:
    return _linear_forms() if hom == (1.0, 1.0) else _homogeneous_forms(*hom)


def _detect_homogeneity(f: TorchFn) -> tuple[float, float] | None:
    """(a₊, a₋) if f(λz) = λ f(z) for λ > 0 on a grid (then f = a₊z for z ≥ 0, a₋z for z < 0:
    the scale-invariant class, book §5.2), else None."""
    z = torch.linspace(-6.0, 6.0, 49, dtype=torch.float64)
    with torch.no_grad():
        base = f(z)
        scale = float(base.abs().max()) + 1e-300
        for lam in (0.37, 2.0, 5.3):
            if float((f(lam * z) - lam * base).abs().max()) > 1e-12 * lam * scale:
                return None
        v = f(torch.tensor([1.0, -1.0], dtype=torch.float64))
    return float(v[0]) + 0.0, float(-v[1]) + 0.0


# --------------------------------------------------------------------------------------------
# user callables


class _AutogradDerivative:
    """The ``order``-th derivative (1, 2 or 3) of an elementwise function by nested autograd;
    a class, not a closure, so that user activations pickle when their function does."""

    def __init__(self, f: TorchFn, order: int) -> None:
        self.f, self.order = f, order

    def __call__(self, z: Tensor) -> Tensor:
        with torch.enable_grad():
            x = z.detach().clone().requires_grad_(True)
            y = self.f(x)
            # A graph that does not reach x means a derivative that is identically zero there:
            # σ constant (no graph at all), or a lower derivative constant (z, 2z, clamp).
            for k in range(self.order):
                if y is None or not y.requires_grad:
                    return torch.zeros_like(z)
                last = k == self.order - 1
                (y,) = torch.autograd.grad(y.sum(), x, create_graph=not last, allow_unused=True)
        return torch.zeros_like(z) if y is None else y.detach()


def _check_callable(f: TorchFn, name: str) -> None:
    """Probe a user callable once: elementwise, finite, differentiable by autograd."""
    probe = torch.linspace(-12.0, 12.0, 97, dtype=torch.float64)
    try:
        out = f(probe)
    except Exception as exc:  # the user's code: report what it raised, with what we passed
        raise TypeError(
            f"activation {name!r} must map a float64 torch tensor to a tensor of the same shape; "
            f"calling it on torch.linspace(-12, 12, 97) raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"activation {name!r} must return a torch.Tensor, got {type(out).__name__}; "
            "write it with torch operations (torch.tanh, torch.where, ...)"
        )
    if out.shape != probe.shape:
        raise TypeError(
            f"activation {name!r} must act elementwise: input shape {tuple(probe.shape)} gave "
            f"output shape {tuple(out.shape)}"
        )
    if not out.dtype.is_floating_point:
        raise TypeError(
            f"activation {name!r} must return floating-point values, got dtype {out.dtype} "
            "(an integer or bool result has no derivative; write it with float operations)"
        )
    bad = ~torch.isfinite(out)
    if bad.any():
        z = probe[bad][0].item()
        raise ValueError(
            f"activation {name!r} returned a non-finite value ({out[bad][0].item()}) at z = {z:g}; "
            "an activation must be finite on the whole real line"
        )
    _check_elementwise(f, name, probe, out)


def _check_elementwise(f: TorchFn, name: str, probe: Tensor, out: Tensor) -> None:
    """σ must act on each entry alone: permuting the input permutes the output the same way,
    and a part of the input gives that part of the output (rules out cumsum, sort,
    normalisation by the batch, …)."""
    perm = torch.randperm(probe.numel(), generator=torch.Generator().manual_seed(0))
    tol = 1e-10 * max(1.0, float(out.abs().max()))
    for what, z, expected in (
        ("a permuted input", probe[perm], out[perm]),
        ("a part of the input", probe[10:40], out[10:40]),
    ):
        try:
            got = f(z)
            same = got.shape == expected.shape and bool(
                ((got - expected).abs() <= tol + 1e-10 * expected.abs()).all()
            )
        except Exception:  # a shape-bound or broken function: not elementwise either
            same = False
        if not same:
            raise TypeError(
                f"activation {name!r} must act elementwise: on {what} it did not return the "
                "same values, rearranged the same way (is it a cumulative, sorting or "
                "normalising operation?)"
            )


def activation(
    spec: str | Activation | TorchFn,
    /,
    *,
    d1: TorchFn | None = None,
    d2: TorchFn | None = None,
    kinks: tuple[float, ...] = (),
    name: str | None = None,
    **params: float,
) -> Activation:
    """Build an :class:`Activation` from a registry name, an Activation, or a user callable.

    Parameters
    ----------
    spec:
        A built-in name (see the module docstring; ``"silu"`` is an alias of ``"swish"``), an
        Activation (returned unchanged), or a callable acting elementwise on torch tensors.
    d1, d2:
        For callables: σ' and σ''. Taken by autograd when omitted.
    kinks:
        For callables: points where σ, σ' or σ'' jump, so that quadrature can split there.
    params:
        Parameters of a built-in (``slope`` for leaky_relu, ``alpha`` for elu).

    Examples
    --------
    >>> pdlt.activation("leaky_relu", slope=0.1)
    Activation('leaky_relu', slope=0.1)
    >>> pdlt.activation(lambda z: torch.tanh(z) + 0.1 * z, name="tanh_plus_linear")
    Activation('tanh_plus_linear')
    """
    if isinstance(spec, Activation):
        if params or d1 or d2 or kinks or name:
            raise TypeError("an Activation is already complete; pass no further arguments")
        return spec
    if isinstance(spec, str):
        key = _ALIASES.get(spec.lower(), spec.lower())
        if key not in _REGISTRY:
            raise ValueError(
                f"unknown activation {spec!r}; built-ins are {', '.join(BUILTIN_ACTIVATIONS)} "
                "(or pass any elementwise torch callable)"
            )
        if d1 or d2 or kinks or name:
            raise TypeError(f"d1, d2, kinks and name are for user callables, not built-in {spec!r}")
        try:
            return _REGISTRY[key](**params)
        except TypeError as exc:
            raise TypeError(f"bad parameters for activation {key!r}: {exc}") from None
    if callable(spec):
        if params:
            raise TypeError(
                f"keyword parameters {sorted(params)} apply to built-ins only; bind them in your callable"
            )
        label = name or getattr(spec, "__name__", "user")
        if label == "<lambda>":
            label = "user"
        _check_callable(spec, label)
        for k in kinks:
            if not math.isfinite(k):
                raise ValueError(f"kinks must be finite floats, got {kinks!r}")
        hom = _detect_homogeneity(spec)
        if hom is not None:
            # a scale-invariant callable is a member of the family: its kink and closed forms
            kinks = tuple(kinks) + ((0.0,) if hom[0] != hom[1] else ())
            forms = _family_forms(hom)
        return Activation(
            name=label,
            fn=spec,
            d1=d1 if d1 is not None else _AutogradDerivative(spec, 1),
            d2=d2 if d2 is not None else _AutogradDerivative(spec, 2),
            kinks=tuple(sorted({float(k) for k in kinks})),
            homogeneous=hom,
            closed_forms=_freeze(forms) if hom is not None else MappingProxyType({}),
            builtin=False,
        )
    raise TypeError(
        f"activation must be a name, an Activation or a callable, got {type(spec).__name__}"
    )
