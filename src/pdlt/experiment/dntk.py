"""Empirical dNTKs and ddNTKs of real networks from their layer structure, and their statistics.

With v_{i;δ} ≡ Λ∇_θ z^{(ℓ)}_{i;δ} the learning-rate-weighted gradient of a layer-ℓ preactivation
(λ_b for biases, λ_W/n_{ℓ'−1} for the weights of layer ℓ' — the convention of
:func:`pdlt.empirical_ntk`), the book's differentials of the NTK (§11.1, ∞.1;
``shared/theory/02-ntk.md`` §5.1, §6.1) are directional derivatives along these directions:

    dĤ_{i0i1i2;δ0δ1δ2}         = D²z_{i0;δ0}[v_{i1;δ1}, v_{i2;δ2}]                 (eq. 11.10)
    dd_IĤ_{i0i1i2i3;δ0δ1δ2δ3}  = D³z_{i0;δ0}[v_{i1;δ1}, v_{i2;δ2}, v_{i3;δ3}]       (eq. ∞.4)
    dd_IIĤ_{i1i2i3i4;δ1δ2δ3δ4} = ⟨Hess z_{i1;δ1} v_{i3;δ3}, Λ Hess z_{i2;δ2} v_{i4;δ4}⟩ (eq. ∞.5)

The first index of dĤ and dd_IĤ is the one differentiated more than once.

Layer structure (no parameter-space object is ever built). The gradient of z_a, a = (i, δ),
with respect to the parameters of layer ℓ' is rank one, (J_a ⊗ h_{δ_a}, J_a), with
J_a = ∂z^{(ℓ)}_a/∂z^{(ℓ')} the backward signal and h = h^{(ℓ'−1)} the forward activation.
Differentiating along fixed directions v_b, v_c gives rank-two and rank-four updates:

    D_b ∇z_a     = (J̇_ab ⊗ h + J_a ⊗ ḣ_b,  J̇_ab),
    D_c D_b ∇z_a = (J̈_abc ⊗ h + J̇_ab ⊗ ḣ_c + J̇_ac ⊗ ḣ_b + J_a ⊗ ḧ_bc,  J̈_abc),

where ḣ_b, ḧ_bc are the forward tangents of the activations (Taylor mode: ż_b, ż_bc propagated
up the layers with the rank-one weight directions Ẇ_b = (λ_W/n) J_b ⊗ h_{δ_b}) and J̇, J̈ the
tangents of the backward signal, propagated down:

    J_a   = (J_a W) σ'_a,     J̇_ab = (J̇_ab W + (λ_W/n)(J_a·J_b) h_{δ_b}) σ'_a + (J_a W) σ''_a ż_b,

and likewise J̈; a residual layer l (z^{(l)} = b + Wσ(z^{(l−1)}) + γz^{(l−1)}, book eq. B.3) adds
γJ^{(l)} to J^{(l−1)} (so γJ̇, γJ̈ to their tangents) and γż^{(l−1)}, γż̇^{(l−1)} to the forward
tangents. Every tensor is then a sum over layers of Gram products of these vectors with
the metric Λ (λ_b on the bias part, λ_W/n_{ℓ'−1} on the weight part), computed with batched
matmuls over networks × directions. Cost per layer ~ K³ n_ℓ'² for the ddNTKs (K = neurons ×
inputs), against a nested-autograd cost that grows with the number of parameters.

Estimators registered in :data:`pdlt.experiment.measure.ESTIMATORS` (i ≠ j are distinct
neurons of layer ℓ, n = n_{ℓ−1}; averaged over all ordered pairs of the measured neurons within
each network; error bars are the spread across networks):

``"dntk"``
    ``P[a,b,c,d]`` = n E[dĤ_{ijj;abc} z_{i;d}],  ``Q[a,b,c,d]`` = n E[dĤ_{iij;abc} z_{j;d}].
``"ddntk"``
    ``R[a,b,c,d]`` = n E[dd_IĤ_{iijj;abcd}],  ``S[a,b,c,d]`` = n E[dd_IIĤ_{iijj;abcd}],
    ``T[a,b,c,d]`` = n E[dd_IIĤ_{ijij;adbc}], ``U[a,b,c,d]`` = n E[dd_IIĤ_{ijji;acdb}].
``"Theta1"``
    ``Theta1`` = n (E[Ĥ_{ii}] − Θ), Θ the frozen NTK of :func:`pdlt.ntk`.

These are the coefficients of 1/n_{ℓ−1} in the tensor decompositions of 02-ntk.md §5.3, §6.2:
E[dĤ_{i0i1i2;δ0δ1δ2} z_{i3;δ3}] = (1/n)[δ_{i0i3}δ_{i1i2}P_{δ0δ1δ2δ3}
+ δ_{i0i1}δ_{i2i3}Q_{δ0δ1δ2δ3} + δ_{i0i2}δ_{i1i3}Q_{δ0δ2δ1δ3}],
E[dd_IĤ_{i0i1i2i3}] = (1/n)[δ_{i0i1}δ_{i2i3}R_{δ0δ1δ2δ3} + δ_{i0i2}δ_{i3i1}R_{δ0δ2δ3δ1} + δ_{i0i3}δ_{i1i2}R_{δ0δ3δ1δ2}],
E[dd_IIĤ_{i1i2i3i4}] = (1/n)[δ_{i1i2}δ_{i3i4}S_{δ1δ2δ3δ4} + δ_{i1i3}δ_{i4i2}T_{δ1δ3δ4δ2} + δ_{i1i4}δ_{i2i3}U_{δ1δ4δ2δ3}].
All of them vanish at layer 1 (z^{(1)} is linear in the parameters) and are set to exactly 0 there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pdlt import _validation
from pdlt.activations import Activation
from pdlt.experiment.ensemble import (
    DEFAULT_MAX_MEMORY,
    Chunk,
    check_ensemble_args,
    forward_chunks,
    resolve_device,
    resolve_dtype,
)
from pdlt.experiment.measure import RunningMoments
from pdlt.experiment.ntk import check_finite_networks, check_layer, check_neurons
from pdlt.network import MLP, validate_inputs

Tensor = torch.Tensor

NEURONS = 4  # neurons per layer whose dNTK/ddNTK the estimators measure (12 ordered pairs)
SUB_BATCH_MEMORY = 64 * 2**20  # bytes of the largest intermediate per sub-batch of networks


# --------------------------------------------------------------------------------------------
# activation derivatives


def _derivatives(act: Activation, z: Tensor, third: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """σ', σ'' and (if asked) σ''' at z. σ''' is taken by autograd through σ'' of built-ins
    (whose σ'' is differentiable or identically 0) and through σ itself for user callables,
    whose σ'' is already an autograd leaf."""
    s1, s2 = act.d1(z), act.d2(z)
    if not third:
        return s1, s2, None
    with torch.enable_grad():
        x = z.detach().clone().requires_grad_(True)
        if act.builtin:
            y = act.d2(x)
        else:
            (g,) = torch.autograd.grad(act.fn(x).sum(), x, create_graph=True)
            (y,) = torch.autograd.grad(g.sum(), x, create_graph=True, allow_unused=True)
        if y is None or not y.requires_grad:
            return s1, s2, torch.zeros_like(z)
        (s3,) = torch.autograd.grad(y.sum(), x, allow_unused=True)
    return s1, s2, torch.zeros_like(z) if s3 is None else s3.detach()


# --------------------------------------------------------------------------------------------
# the structured dNTK and ddNTKs of a chunk of networks


@dataclass(frozen=True)
class _Directions:
    """Directions a = (neuron i_a, input δ_a), flattened neuron-major: a = i·N + δ."""

    neuron: Tensor  # (K,) index of the layer-ℓ neuron
    delta: Tensor  # (K,) input index
    k: int
    N: int

    @property
    def K(self) -> int:
        return self.k * self.N


def _at_directions(s: Tensor, d: _Directions) -> Tensor:
    """(B, n, N) per-input vector → (B, K, n): its value at each direction's own input δ_a."""
    return s[:, :, d.delta].transpose(1, 2)


def _pair_coefficient(c: Tensor, d: _Directions) -> Tensor:
    """c_{δ_a δ_b} for every pair of directions: (B, N, N) → (B, K, K)."""
    return c[:, d.delta][:, :, d.delta]


def chunk_dntk(
    net: MLP,
    chunk: Chunk,
    layer: int | None = None,
    neurons: Sequence[int] | int | None = None,
    *,
    ddntk: bool = True,
) -> dict[str, Tensor]:
    """The NTK, dNTK and (optionally) ddNTKs of layer ``layer`` for every network of a chunk.

    Returns
    -------
    dict
        ``"H"`` (B, k, k, N, N), ``"dH"`` (B, k, k, k, N, N, N) and, with ``ddntk``,
        ``"ddI"`` and ``"ddII"`` (B, k, k, k, k, N, N, N, N): network, neuron indices in the
        order of the book's definitions (02-ntk.md §5.1, §6.1), then input indices likewise.
    """
    ell = check_layer(net, layer)
    idx = check_neurons(net, ell, neurons)
    B, N, k = chunk.size, chunk.x.shape[1], len(idx)
    dev, dt = chunk.x.device, chunk.x.dtype
    d = _Directions(
        neuron=torch.as_tensor(idx, device=dev).repeat_interleave(N),
        delta=torch.arange(N, device=dev).repeat(k),
        k=k,
        N=N,
    )
    K = d.K
    act = net.activation

    # forward activations h^{(l)} (l = 0..ℓ−1) and σ', σ'', σ''' at z^{(l)} (l = 1..ℓ−1)
    h = [chunk.x.expand(B, *chunk.x.shape)]
    sig: list[tuple[Tensor, Tensor, Tensor | None]] = [None]  # type: ignore[list-item]
    for lp in range(1, ell):
        z = chunk.z[lp - 1]
        h.append(act(z))
        sig.append(_derivatives(act, z, third=ddntk))
    coef = [None] + [  # c^{(l)}_{δδ'} = λ_b + λ_W h^{(l−1)}_δ·h^{(l−1)}_δ'/n_{l−1}, l = 1..ℓ
        net.lambda_b[lp - 1]
        + net.lambda_W[lp - 1] * (h[lp - 1].transpose(1, 2) @ h[lp - 1]) / net.widths[lp - 1]
        for lp in range(1, ell + 1)
    ]
    rate = [None] + [net.lambda_W[lp - 1] / net.widths[lp - 1] for lp in range(1, ell + 1)]

    # backward signals J^{(l)}_a = ∂z^{(ℓ)}_a/∂z^{(l)}: (B, K, n_l); g^{(l)}_a = J^{(l+1)}_a W^{(l+1)}
    J: list[Tensor | None] = [None] * (ell + 1)
    g: list[Tensor | None] = [None] * (ell + 1)
    top = torch.zeros(B, K, net.widths[ell], dtype=dt, device=dev)
    top[:, torch.arange(K, device=dev), d.neuron] = 1.0
    J[ell] = top
    for lp in range(ell - 1, 0, -1):
        g[lp] = torch.bmm(J[lp + 1], chunk.W[lp])
        J[lp] = g[lp] * _at_directions(sig[lp][0], d)
        if net.skip[lp] != 0.0:  # residual layer lp+1: ∂z^{(lp+1)}/∂z^{(lp)} = Wσ' + γ·1 (B.3)
            J[lp] = J[lp] + net.skip[lp] * J[lp + 1]

    # forward tangents ż_b^{(l)}_{;δ}: (B, n_l, K, N) and, for dd_I, ż_bc: (B, n_l, K, K, N);
    # hd[l], hdd[l] are the activation tangents ḣ^{(l)}, ḧ^{(l)} (absent at l = 0: x is fixed)
    zd: list[Tensor | None] = [None] * ell
    zdd: list[Tensor | None] = [None] * ell
    hd: list[Tensor | None] = [None] * ell
    hdd: list[Tensor | None] = [None] * ell
    for lp in range(1, ell):
        n = net.widths[lp]
        local = J[lp].transpose(1, 2)[:, :, :, None] * coef[lp][:, d.delta][:, None]
        if lp == 1:
            zd[lp] = local
        else:
            up = torch.bmm(chunk.W[lp - 1], hd[lp - 1].reshape(B, net.widths[lp - 1], K * N))
            zd[lp] = up.view(B, n, K, N) + local
            if net.skip[lp - 1] != 0.0:  # residual: ż^{(l)} gains γ ż^{(l−1)}
                zd[lp] = zd[lp] + net.skip[lp - 1] * zd[lp - 1]
        s1, s2, _ = sig[lp]
        hd[lp] = s1[:, :, None, :] * zd[lp]
        if not ddntk:
            continue
        if lp == 1:
            zdd[lp] = torch.zeros(B, n, K, K, N, dtype=dt, device=dev)
        else:
            prev = net.widths[lp - 1]
            up = torch.bmm(chunk.W[lp - 1], hdd[lp - 1].reshape(B, prev, K * K * N))
            # Ẇ_b ḣ_c + Ẇ_c ḣ_b, with Ẇ_b ḣ_{c;δ} = (λ_W/n)(h_{δ_b}·ḣ_{c;δ}) J_b
            m = torch.einsum("bpk,bpcd->bkcd", h[lp - 1][:, :, d.delta], hd[lp - 1])
            cross = rate[lp] * torch.einsum("bkcd,bkp->bpkcd", m, J[lp])
            zdd[lp] = up.view(B, n, K, K, N) + cross + cross.transpose(2, 3)
            if net.skip[lp - 1] != 0.0:
                zdd[lp] = zdd[lp] + net.skip[lp - 1] * zdd[lp - 1]
        hdd[lp] = (
            s2[:, :, None, None, :] * zd[lp][:, :, :, None, :] * zd[lp][:, :, None, :, :]
            + s1[:, :, None, None, :] * zdd[lp]
        )

    # backward pass with the per-layer Gram contractions
    H = torch.zeros(B, K, K, dtype=dt, device=dev)
    dH = torch.zeros(B, K, K, K, dtype=dt, device=dev)
    ddI = torch.zeros(B, K, K, K, K, dtype=dt, device=dev) if ddntk else None
    ddII = torch.zeros(B, K, K, K, K, dtype=dt, device=dev) if ddntk else None
    Jd = torch.zeros(B, K, K, net.widths[ell], dtype=dt, device=dev)  # J̇_ab
    Jdd = torch.zeros(B, K, K, K, net.widths[ell], dtype=dt, device=dev) if ddntk else None
    for lp in range(ell, 0, -1):
        n_l = net.widths[lp]
        cK = _pair_coefficient(coef[lp], d)  # c_{δ_a δ_b}
        JT = J[lp].transpose(1, 2)
        GJJ = torch.bmm(J[lp], JT)  # J_a·J_b
        GdJ = torch.bmm(Jd.reshape(B, K * K, n_l), JT).view(B, K, K, K)  # J̇_ab·J_c
        H += cK * GJJ
        dH += cK[:, :, None, :] * GdJ
        if ddntk:
            GddJ = torch.bmm(Jdd.reshape(B, K**3, n_l), JT).view(B, K, K, K, K)
            ddI += cK[:, :, None, None, :] * GddJ
            GdJdJ = torch.bmm(Jd.reshape(B, K * K, n_l), Jd.reshape(B, K * K, n_l).transpose(1, 2))
            ddII += cK[:, :, :, None, None] * GdJdJ.view(B, K, K, K, K).permute(0, 1, 3, 2, 4)
        if lp > 1:  # terms from the tangents of the activations feeding this layer
            hK = h[lp - 1][:, :, d.delta]  # h_{δ_a}: (B, n, K)
            # Xh[a, b, c] = ḣ_{b;δ_a}·h_{δ_c}
            Xh = torch.einsum("bpkd,bpe->bkde", hd[lp - 1], hK)[:, :, d.delta].transpose(1, 2)
            w = rate[lp]
            dH += w * GJJ[:, :, None, :] * Xh
            if ddntk:
                Xhh = torch.einsum("bpkcd,bpe->bkcde", hdd[lp - 1], hK)[:, :, :, d.delta]
                Xhh = Xhh.permute(0, 3, 1, 2, 4)  # [a0, a1, a2, a3] = ḧ_{a1a2;δ_a0}·h_{δ_a3}
                ddI += w * (
                    GdJ[:, :, :, None, :] * Xh[:, :, None, :, :]
                    + GdJ[:, :, None, :, :] * Xh[:, :, :, None, :]
                    + GJJ[:, :, None, None, :] * Xhh
                )
                # Yhh[a1, a2, a3, a4] = ḣ_{a3;δ_a1}·ḣ_{a4;δ_a2}
                Yhh = torch.einsum("bpkd,bpce->bdekc", hd[lp - 1], hd[lp - 1])
                Yhh = Yhh[:, d.delta][:, :, d.delta]
                ddII += w * (
                    GdJ.permute(0, 1, 3, 2)[..., None] * Xh.permute(0, 3, 1, 2)[:, :, :, None]
                    + GdJ.permute(0, 3, 1, 2)[:, :, :, None] * Xh.permute(0, 1, 3, 2)[..., None]
                    + GJJ[:, :, :, None, None] * Yhh
                )
        if lp == 1:
            break
        # step the backward tangents down to layer lp − 1
        s1, s2, s3 = (_at_directions(s, d) if s is not None else None for s in sig[lp - 1])
        W = chunk.W[lp - 1]
        hKT = h[lp - 1][:, :, d.delta].transpose(1, 2)  # (B, K, n_{lp−1}): h_{δ_b}
        ga = g[lp - 1]
        gd = torch.bmm(Jd.reshape(B, K * K, n_l), W).view(B, K, K, -1)
        gd += rate[lp] * GJJ[:, :, :, None] * hKT[:, None]
        zsel = zd[lp - 1][:, :, :, d.delta].permute(0, 3, 2, 1)  # [a, b, p] = ż_{b;δ_a}
        Jd_next = gd * s1[:, :, None] + (ga * s2)[:, :, None] * zsel
        gamma = net.skip[lp - 1]  # residual layer lp: J^{(lp−1)} gains γ J^{(lp)}, so J̇, J̈ too
        if gamma != 0.0:
            Jd_next = Jd_next + gamma * Jd
        if ddntk:
            gdd = torch.bmm(Jdd.reshape(B, K**3, n_l), W).view(B, K, K, K, -1)
            gdd += rate[lp] * (
                GdJ[..., None] * hKT[:, None, None]
                + GdJ.transpose(2, 3)[..., None] * hKT[:, None, :, None]
            )
            zzsel = zdd[lp - 1][:, :, :, :, d.delta].permute(0, 4, 2, 3, 1)  # ż_{bc;δ_a}
            Jdd = (
                gdd * s1[:, :, None, None]
                + gd[:, :, :, None] * (s2[:, :, None] * zsel)[:, :, None, :]
                + gd[:, :, None, :] * (s2[:, :, None] * zsel)[:, :, :, None]
                + (ga * s3)[:, :, None, None] * zsel[:, :, :, None] * zsel[:, :, None, :]
                + (ga * s2)[:, :, None, None] * zzsel
                + (gamma * Jdd if gamma != 0.0 else 0.0)
            )
        Jd = Jd_next
    out = {"H": H.view(B, k, N, k, N).permute(0, 1, 3, 2, 4)}
    out["dH"] = dH.view(B, k, N, k, N, k, N).permute(0, 1, 3, 5, 2, 4, 6)
    if ddntk:
        perm = (0, 1, 3, 5, 7, 2, 4, 6, 8)
        out["ddI"] = ddI.view(B, k, N, k, N, k, N, k, N).permute(*perm)
        out["ddII"] = ddII.view(B, k, N, k, N, k, N, k, N).permute(*perm)
    return out


def _sub_chunks(chunk: Chunk, size: int) -> Iterator[Chunk]:
    """Slices of a chunk of at most ``size`` networks (the ddNTK intermediates grow like K³n)."""
    for lo in range(0, chunk.size, size):
        hi = min(lo + size, chunk.size)
        yield Chunk(
            z=tuple(t[lo:hi] for t in chunk.z),
            W=tuple(t[lo:hi] for t in chunk.W),
            b=tuple(t[lo:hi] for t in chunk.b),
            x=chunk.x,
            start=chunk.start + lo,
        )


def _sub_batch(net: MLP, layer: int, k: int, N: int, ddntk: bool, itemsize: int) -> int:
    """Networks per sub-batch so that the largest per-layer intermediate stays bounded."""
    K, n = k * N, max(net.widths[1 : layer + 1])
    per_net = (K**3 if ddntk else K**2) * n * 6 + K**4 * 4 + n * n * 2
    return max(1, SUB_BATCH_MEMORY // (per_net * itemsize))


@dataclass(frozen=True, eq=False)
class EmpiricalDNTK:
    """The NTK, dNTK and ddNTKs of one layer of an ensemble of sampled networks.

    Index conventions are the book's (02-ntk.md §5.1, §6.1): network first, then the neuron
    indices, then the input indices in the same order.

    Attributes
    ----------
    H:
        (M, k, k, N, N): Ĥ_{i1i2;δ1δ2}, the NTK (as :func:`pdlt.empirical_ntk`).
    dH:
        (M, k, k, k, N, N, N): dĤ_{i0i1i2;δ0δ1δ2} = Σ λλ ∂²z_{i0;δ0} ∂z_{i1;δ1} ∂z_{i2;δ2}
        (z_{i0} differentiated twice; symmetric under (i1δ1) ↔ (i2δ2)).
    ddI:
        (M, k, k, k, k, N, N, N, N): dd_IĤ_{i0i1i2i3;δ0δ1δ2δ3} = Σ λλλ ∂³z_{i0} ∂z_{i1} ∂z_{i2}
        ∂z_{i3}, or None when not computed.
    ddII:
        (M, k, k, k, k, N, N, N, N): dd_IIĤ_{i1i2i3i4;δ1δ2δ3δ4} = Σ λλλ ∂²z_{i1}(μ1μ2)
        ∂²z_{i2}(ν1μ3) ∂z_{i3}(ν2) ∂z_{i4}(ν3), contracted with λ_{μ1ν1} λ_{μ2ν2} λ_{μ3ν3}; or None.
    layer, neurons:
        Which layer, and which of its neurons (k of them).
    net, x, seed:
        Spec, inputs (N, n_0) and the seed of the ensemble.
    """

    H: Tensor
    dH: Tensor
    ddI: Tensor | None
    ddII: Tensor | None
    layer: int
    neurons: tuple[int, ...]
    net: MLP
    x: np.ndarray
    seed: int

    def __repr__(self) -> str:
        M, k, _, N, _ = self.H.shape
        return (
            f"EmpiricalDNTK(networks={M}, layer={self.layer}, neurons={k}, inputs={N}, "
            f"ddntk={self.ddI is not None})"
        )


def empirical_dntk(
    net: MLP,
    x: np.ndarray | Tensor,
    n_networks: int = 1,
    seed: int = 0,
    *,
    layer: int | None = None,
    neurons: Sequence[int] | int | None = None,
    ddntk: bool = True,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> EmpiricalDNTK:
    """dNTKs and ddNTKs of ``n_networks`` sampled networks, by the layer structure.

    The networks are the ones :func:`pdlt.measure` draws for the same ``seed``; the learning
    rates are the network's λ_b and λ_W/n_{ℓ−1} (as :func:`pdlt.empirical_ntk`). Sizes grow like
    (kN)³ for the dNTK and (kN)⁴ for the ddNTKs (k neurons, N inputs): choose few of each.

    Examples
    --------
    >>> e = pdlt.empirical_dntk(net, x, n_networks=100, seed=0, neurons=4)
    >>> e.dH.shape                 # (networks, 4, 4, 4, N, N, N)
    """
    xt = validate_inputs(net, x)
    n_networks = _validation.integer("n_networks", n_networks, min=1)
    if not isinstance(ddntk, bool):
        raise TypeError(f"ddntk must be True or False, got {ddntk!r}")
    check_ensemble_args(max(int(n_networks), 2), seed, max_memory)
    ell = check_layer(net, layer)
    idx = check_neurons(net, ell, neurons)
    dt, dev = resolve_dtype(dtype), resolve_device(device)
    size = _sub_batch(net, ell, len(idx), xt.shape[0], ddntk, torch.finfo(dt).bits // 8)
    parts: dict[str, list[Tensor]] = {}
    for chunk in forward_chunks(
        net, xt, n_networks, seed, dtype=dt, device=dev, max_memory=max_memory
    ):
        for sub in _sub_chunks(chunk, size):
            for key, val in chunk_dntk(net, sub, ell, idx, ddntk=ddntk).items():
                check_finite_networks(val, sub.start, f"empirical {key}")
                parts.setdefault(key, []).append(val.contiguous())
    out = {key: torch.cat(v) for key, v in parts.items()}
    return EmpiricalDNTK(
        H=out["H"],
        dH=out["dH"],
        ddI=out.get("ddI"),
        ddII=out.get("ddII"),
        layer=ell,
        neurons=tuple(idx),
        net=net,
        x=xt.numpy(),
        seed=int(seed),
    )


# --------------------------------------------------------------------------------------------
# estimators


def _two_neuron_check(net: MLP, neurons: int, what: str) -> None:
    small = [ell for ell in range(2, net.depth + 1) if net.widths[ell] < 2]
    if small:
        raise ValueError(
            f"the {what} statistics need two distinct neurons in every layer, but layer(s) "
            f"{small} have width 1; use output_dim ≥ 2 (the statistics of layer L do not depend "
            "on n_L)"
        )
    if neurons < 2:
        raise ValueError(f"neurons must be ≥ 2 for cross-neuron statistics, got {neurons}")


def _pairs_mean(full: Tensor, diag: Tensor, k: int) -> Tensor:
    """Mean over ordered pairs i ≠ j from the sum over all (i, j) and its i = j part."""
    return (full - diag) / (k * (k - 1))


def dntk_moments(dH: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """Per-network P, Q (before the factor n_{ℓ−1}): (B, N, N, N, N) each.

    P[a,b,c,d] = mean_{i≠j} dĤ_{ijj;abc} z_{i;d};  Q[a,b,c,d] = mean_{i≠j} dĤ_{iij;abc} z_{j;d}
    (dH: (B, k, k, k, N, N, N); z: (B, k, N), the same k neurons).
    """
    k = dH.shape[1]
    diag = torch.einsum("miiiabc,mid->mabcd", dH, z)
    P = _pairs_mean(torch.einsum("mijjabc,mid->mabcd", dH, z), diag, k)
    Q = _pairs_mean(torch.einsum("miijabc,mjd->mabcd", dH, z), diag, k)
    return P, Q


def ddntk_moments(ddI: Tensor, ddII: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-network R, S, T, U (before the factor n_{ℓ−1}): (B, N, N, N, N) each.

    R[a,b,c,d] = mean dd_I_{iijj;abcd}; S[a,b,c,d] = mean dd_II_{iijj;abcd};
    T[a,b,c,d] = mean dd_II_{ijij;adbc}; U[a,b,c,d] = mean dd_II_{ijji;acdb}, over i ≠ j.
    The permutations undo the sample order of the book's decomposition (02-ntk.md §6.2), where
    T carries (δ1δ3δ4δ2) and U carries (δ1δ4δ2δ3).
    """
    k = ddI.shape[1]
    R = _pairs_mean(torch.einsum("miijjabcd->mabcd", ddI), torch.einsum("miiiiabcd->mabcd", ddI), k)
    diag = torch.einsum("miiiiabcd->mabcd", ddII)
    S = _pairs_mean(torch.einsum("miijjabcd->mabcd", ddII), diag, k)
    Tm = _pairs_mean(torch.einsum("mijijabcd->mabcd", ddII), diag, k)
    Um = _pairs_mean(torch.einsum("mijjiabcd->mabcd", ddII), diag, k)
    # T_{δ1δ3δ4δ2} = n E[dd_II_{ijij;δ1δ2δ3δ4}]  →  T[p,q,r,s] = Tm[p,s,q,r]
    T = Tm.permute(0, 1, 3, 4, 2)
    # U_{δ1δ4δ2δ3} = n E[dd_II_{ijji;δ1δ2δ3δ4}]  →  U[p,q,r,s] = Um[p,r,s,q]
    U = Um.permute(0, 1, 4, 2, 3)
    return R, S, T, U


class _LayerwiseEstimator:
    """Shared driver: per chunk and layer ℓ ≥ 2, the structured tensors of ``neurons`` neurons,
    reduced to per-network moments, times n_{ℓ−1}; layer 1 is exactly 0."""

    names: tuple[str, ...] = ()
    ddntk = False
    what = ""

    def __init__(self, net: MLP, x: Tensor, neurons: int = NEURONS) -> None:
        _two_neuron_check(net, neurons, self.what)
        self.net, self.neurons, self.N = net, int(neurons), x.shape[0]
        self._moments = RunningMoments()

    def _reduce(self, out: dict[str, Tensor], z: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def update(self, chunk: Chunk) -> None:
        L, N = self.net.depth, self.N
        rows = torch.zeros(chunk.size, len(self.names), L, N, N, N, N, dtype=torch.float64)
        itemsize = chunk.x.element_size()
        for ell in range(2, L + 1):
            k = min(self.net.widths[ell], self.neurons)
            size = _sub_batch(self.net, ell, k, N, self.ddntk, itemsize)
            for sub in _sub_chunks(chunk, size):
                out = chunk_dntk(self.net, sub, ell, k, ddntk=self.ddntk)
                out = {key: v.to(torch.float64) for key, v in out.items()}
                z = sub.z[ell - 1][:, :k].to(torch.float64)
                lo = sub.start - chunk.start
                stats = self._reduce(out, z)
                for s, val in enumerate(stats):
                    rows[lo : lo + sub.size, s, ell - 1] = val * self.net.widths[ell - 1]
        self._moments.update(rows)

    def result(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        mean, err = self._moments.result()
        return {name: (mean[s], err[s]) for s, name in enumerate(self.names)}


class DNTKEstimator(_LayerwiseEstimator):
    """``P``, ``Q`` per layer (depth, N, N, N, N), with standard errors across networks."""

    names = ("P", "Q")
    what = "dNTK"

    def _reduce(self, out: dict[str, Tensor], z: Tensor) -> tuple[Tensor, ...]:
        return dntk_moments(out["dH"], z)


class DDNTKEstimator(_LayerwiseEstimator):
    """``R``, ``S``, ``T``, ``U`` per layer (depth, N, N, N, N), with standard errors."""

    names = ("R", "S", "T", "U")
    ddntk = True
    what = "ddNTK"

    def _reduce(self, out: dict[str, Tensor], z: Tensor) -> tuple[Tensor, ...]:
        return ddntk_moments(out["ddI"], out["ddII"])


class Theta1Estimator:
    """``Theta1`` = n_{ℓ−1}(E[Ĥ^{(ℓ)}_{ii}] − Θ^{(ℓ)}) per layer (depth, N, N), Θ from
    :func:`pdlt.ntk`: the O(1/n) correction to the NTK mean (02-ntk.md §3.5, H^{1}).
    Layer 1 is exactly 0 (Ĥ^{(1)} = Θ^{(1)} in every network)."""

    def __init__(self, net: MLP, x: Tensor, neurons: int = 8) -> None:
        from pdlt.experiment.ntk import ThetaEstimator
        from pdlt.theory.ntk import ntk

        self.net = net
        self._theta = ThetaEstimator(net, x, neurons)
        self._Theta = np.asarray(ntk(net, x.numpy()).Theta, dtype=np.float64)

    def update(self, chunk: Chunk) -> None:
        self._theta.update(chunk)

    def result(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        mean, err = self._theta.result()["Theta"]
        n = np.asarray(self.net.widths[:-1], dtype=np.float64)[:, None, None]
        value, error = n * (mean - self._Theta), n * err
        value[0], error[0] = 0.0, 0.0
        return {"Theta1": (value, error)}
