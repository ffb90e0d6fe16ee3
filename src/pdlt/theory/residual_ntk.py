"""The NTK fluctuations D, F, A, B of residual MLPs (book ch. 8 with the skip of App. B, eq. B.3),
any number of inputs: each neuron's path through the skips (pdlt's derivation; see the comment
below and :mod:`pdlt.theory.vertex` for the same bookkeeping of the four-point vertex).
:func:`pdlt.theory.ntk.fluctuation_step` hands a network with residual layers to
:func:`residual_fluctuation_step`; checked against real networks in tests/test_residual_ntk.py."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from pdlt.gaussian import LayerMoments, expect_product, input_pairs
from pdlt.gaussian.orthant import homogeneous_mixed_product
from pdlt.gaussian.rules import nodes_per_piece, split_rule
from pdlt.network import MLP
from pdlt.theory.layers import LayerState, width_ratio
from pdlt.theory.vertex import _joint_kernels, extended_path, pairs_to_tensor, residual_jacobian

Tensor = torch.Tensor

# --------------------------------------------------------------------------------------------
# residual networks: each neuron's path through the skips (written for one input; the N-input
# form, below, is the same bookkeeping over input pairs)
#
# With z^{(ℓ+1)} = b + Wσ(z^{(ℓ)}) + γz^{(ℓ)}, differentiating gives dz^{(ℓ+1)}_i/dθ =
# Σ_j (W_ij σ'_j + γδ_ij) dz^{(ℓ)}_j/dθ + (direct), so (N = 1, i ≠ k, u_{k;l} = σ'_l Ĥ_lk)
#
#   Ĥ'_ii = λ_b + (λ_W/n)Σσ² + Σ_jl W_ij W_il σ'_jσ'_l Ĥ_jl + 2γ Σ_l W_il σ'_l Ĥ_li + γ² Ĥ_ii
#   Ĥ'_ik = Σ_jl W_ij W_kl σ'_jσ'_l Ĥ_jl + γ (w_i·u_k + w_k·u_i) + γ² Ĥ_ik .
#
# At leading order neuron i's path z_i^{(1)}, …, z_i^{(ℓ)} is Gaussian (cross-covariances
# g_{mℓ}K^{(m)}, as for the vertex: :mod:`pdlt.theory.vertex`); everything else is O(1/√n).
#
# A, D. Given layer ℓ, Ĥ'_ii = T̂ + γ²Ĥ_ii + (noise of row i, conditional mean 0), with the shared
# T̂ = λ_b + (1/n)Σ_j X_j, X_j = λ_Wσ_j² + C_W σ'_j² Ĥ_jj. So the NTK diagonal has no part of its
# own neuron's path: Ĥ_ii = Θ + (1/n)Σ_j χ_j + noise, each neuron's influence χ on the shared NTK
#
#   χ^{(ℓ+1)} = a χ + b ψ + e(z^{(ℓ)}),   a = γ² + C_W⟨σ'²⟩,  b = ½(λ_W⟨(σ²)''⟩ + C_WΘ⟨(σ'²)''⟩),
#   e = X − ⟨X⟩ with Θ for Ĥ_jj,
#
# beside its influence ψ on the shared kernel (ψ' = (J + γ²)ψ + C_W φ, vertex.py). Then
# A = n Cov(Ĥ_ii, Ĥ_kk) = Var χ and D = n Cov(Ĥ_ii, z_k²) = Cov(χ, ψ) + Cov(χ, z²) =: Ξ + Z, with
#
#   A' = r(a²A + 2abΞ + b²Ψ) + Var e + 2a Cov(χ, e) + 2b Cov(ψ, e)
#   Ξ' = r(a(J+γ²)Ξ + b(J+γ²)Ψ) + C_W(a Cov(χ, φ) + b Cov(ψ, φ)) + (J+γ²)Cov(ψ, e) + C_W Cov(e, φ)
#   Z' = γ²[r(aZ + bX) + K² P_X]        (X = Cov(ψ, z²); Cov(e, z²) = K²⟨e''⟩ by Stein)
#
# where Cov(χ, ·), Cov(ψ, ·) of functions of z^{(ℓ)} are sums over the earlier layers of the path
# of cross-layer covariances of σ², σ'² (χ and ψ are linear in φ(z^{(m)}), φ'(z^{(m)})).
#
# B. b(i, k) = n E[Ĥ_ik² | paths] = β + φ_b(i) + φ_b(k) (additive): averaging Ĥ'_ik² over the two
# rows, n c² Σ S_jl² + γ² C_W(|u_k|² + |u_i|²) + γ⁴ nĤ_ik² (c = C_W/n), and |u_k|² ∋ σ'_k² Θ², so
#
#   B' = β' = C_W²Θ²⟨σ'⁴⟩ + 2γ²C_WΘ²⟨σ'²⟩ + r(a²β + 2a C_W Cov(σ'², φ_b)),
#   φ_b' = r γ² a φ_b + γ² C_W Θ² φ'(z^{(ℓ)}).
#
# F. q(i, k) = n E[Ĥ_ik | paths] is a bilinear form f(i)ᵀ Q f(k) in the path functions
# f = (1, z^{(m)}, s^{(m)} = σσ'(z^{(m)})): with E[w_i | ε_i] = cσε_i/G (ε the new innovation,
# G = C_b + C_W⟨σ²⟩ its variance),
#
#   q' = α ε_iε_k + (γC_WΘ/G)(ε_i s_k + ε_k s_i) + r(γC_W/G)(ε_i μᵀQf(k) + ε_k μᵀQf(i)) + rγ² q,
#   α = C_W²(Θ⟨σ²σ'²⟩ + r μᵀQμ)/G²,   μ_a = E[s^{(ℓ)} f_a],
#
# and F = n E[Ĥ_ik z_i z_k] = νᵀQν, ν_a = E[f_a z^{(ℓ)}]. At γ = 0 all four reduce to the book's
# plain recursions (eqs. 8.x, :func:`fluctuation_step`).
#
# N inputs. The same steps over input tuples (dz'_{i;a}/dθ = Σ_j (W_ij σ'_{j;a} + γδ_ij) dz_{j;a}/dθ
# + direct):
# A, D: χ, ψ, e are vectors over input pairs p = (a, b) (the vertex's layout), a = diag(γ² +
#   C_W⟨σ'_aσ'_b⟩), b_pq = ∂⟨X_p⟩/∂K_q = λ_W⟨∂∂σσ⟩ + C_WΘ_p⟨∂∂σ'σ'⟩ in the symmetric variables
#   (½⟨∂_c²⟩ on the diagonal), so the products above become matrix products (aAaᵀ, aΞbᵀ, …), the
#   path coefficients of χ on φ_ss, φ_dd of each layer are P×P, the cross-layer covariances
#   Cov(x_r(z^{(m)}), y_q(z^{(ℓ)})), x, y ∈ {σσ, σ'σ'}, four-input expectations
#   (:func:`path_slot_covariances`), and Cov(e_p, z_cz_d) = Σ K_ce K_df ⟨∂_e∂_f e_p⟩ (Stein).
# B: b(i, k)_{abcd} = n E[Ĥ_ik;ac Ĥ_ik;bd | paths] = β + φ_R(i) + φ_L(k) with φ_L;abcd = φ_R;cdab:
#   B' = C_W²Θ_acΘ_bd(⟨σ'_aσ'_bσ'_cσ'_d⟩ + (γ²/C_W)(D_ab + D_cd)) + r[a_ab a_cd β
#        + C_W a_cd E[σ'_aσ'_b φ_R] + C_W a_ab E[σ'_cσ'_d φ_L]],   a_ab = γ² + C_W D_ab,
#   φ_R' = rγ² a_cd φ_R + γ²C_WΘ_acΘ_bd φ_dd;cd(z^{(ℓ)}),  D_ab = ⟨σ'_aσ'_b⟩.
# F: q(i, k)_{ac} = n E[Ĥ_ik;ac | paths] = f(i)ᵀQ^{ac}f(k), f = (1, z^{(m)}_e, s^{(m)}_{e1e2} =
#   σ_{e1}σ'_{e2}(z^{(m)})) for every input; E[W_ij | ε_i] = c σ_jᵀG⁻¹ε_i (G the N×N innovation
#   covariance) turns ε/G into ε̃ = G⁻¹ε and s into s_{c'c}: see :func:`_residual_F`.
# On one input each reduces to the recursion above (the same code runs both).


def _path_rule(act: object, path_K: Tensor, path_g: Tensor, K: Tensor) -> tuple[Tensor, ...]:
    """Nodes (u, v) and weights w of the kink-split rule of (z^{(m)}, z^{(ℓ)}) of one path,
    one input, for every earlier layer m: each (h, nodes)."""
    Km = path_K[:, 0, 0]
    cross = path_g * Km
    cov = torch.stack([torch.stack([Km, cross], -1), torch.stack([cross, K.expand_as(Km)], -1)], -2)
    q = nodes_per_piece(float(torch.sqrt(torch.cat([Km, K.reshape(1)]).max())))
    if act.kinks:  # the kink cuts halve the pieces: as many nodes per unit length at q/2
        q = max(32, -(-q // 64) * 32)
    # shadow cuts only for nearly parallel (z^{(m)}, z^{(ℓ)}) (|g|√(K_m/K) → 1 as γ → 1)
    rho = (path_g.abs() * torch.sqrt(Km / K)).max() if Km.numel() else 0.0
    rule = split_rule(cov, act.kinks, q, shadows=bool(rho > 0.9))
    return rule.z[..., 0], rule.z[..., 1], rule.w


def _path_function(act: object, name: str):  # noqa: ANN202
    """The per-neuron functions of the residual path recursions: 1, z, σ², σ'², s = σσ',
    u = σσ'', t = σ'σ'' (σ'' the explicit derivative, zero for ReLU, as the measurement uses)."""
    f0, f1 = act.derivative(0), act.derivative(1)
    f2 = act.derivative(2)
    return {
        "1": torch.ones_like,
        "z": lambda x: x,
        "ss": lambda x: f0(x) ** 2,
        "dd": lambda x: f1(x) ** 2,
        "s": lambda x: f0(x) * f1(x),
        "u": lambda x: f0(x) * f2(x),
        "t": lambda x: f1(x) * f2(x),
    }[name]


def path_expectations(
    act: object, path_K: Tensor, path_g: Tensor, K: Tensor, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Tensor]:
    """E[f(z^{(m)}) g(z^{(ℓ)})] along one path, one input, per earlier layer m (h,), for each
    (f, g) of ``pairs`` (names of :func:`_path_function`; g = "1" gives the marginal ⟨f⟩_m)."""
    u, v, w = _path_rule(act, path_K, path_g, K)
    at_u = {f: _path_function(act, f)(u) for f in {f for f, _ in pairs}}
    at_v = {g: _path_function(act, g)(v) for g in {g for _, g in pairs}}
    return {(f, g): (w * at_u[f] * at_v[g]).sum(dim=1) for f, g in pairs}


def _slot_products(act: object, big: Tensor, idx: Tensor, orders: tuple[int, ...], tol: float):
    """⟨Π_s σ^{(orders[s])}(z_{idx[t, s]})⟩ over the block kernel ``big`` for rows whose only
    repeated indices are within slots (0, 1) and within slots (2, 3) (a pair of one layer):
    the relu family in closed form (truncated moments with σ' slots, by repetition pattern),
    anything else through :func:`pdlt.gaussian.expect_product`."""
    if act.homogeneous is None:
        fns = [act.derivative(o) for o in orders]
        return expect_product(fns, big, idx, kinks=act.kinks, tol=tol)
    a_plus, a_minus = act.homogeneous
    out = torch.empty(idx.shape[0], dtype=torch.float64)
    groups = [(0, 1), (2, 3)][: idx.shape[1] // 2]
    same = [idx[:, i] == idx[:, j] for i, j in groups]
    for pattern in itertools.product((False, True), repeat=len(groups)):
        rows = torch.ones(idx.shape[0], dtype=torch.bool)
        for flag, eq in zip(pattern, same, strict=True):
            rows &= eq if flag else ~eq
        if not bool(rows.any()):
            continue
        cols, mult, powers = [], [], []
        for flag, (i, j) in zip(pattern, groups, strict=True):
            slots = [(i, j)] if flag else [(i,), (j,)]
            for sl in slots:
                cols.append(sl[0])
                mult.append(len(sl))
                powers.append(sum(orders[s] == 0 for s in sl))
        out[rows] = homogeneous_mixed_product(
            a_plus, a_minus, big, idx[rows][:, cols], tuple(mult), tuple(powers)
        )
    return out


def path_slot_covariances(
    act: object, path_K: Tensor, path_g: Tensor, K: Tensor, tol: float
) -> dict[str, Tensor]:
    """Cross-layer covariances of one path over input pairs, per earlier layer m (h, P, P):
    ``xy`` = Cov(x_r(z^{(m)}), y_q(z^{(ℓ)})) for x, y ∈ {s: σ_aσ_b, d: σ'_aσ'_b} (pairs r, q),
    for the χ and φ_b bookkeeping of :func:`_residual_ADB`."""
    h, N = path_K.shape[0], K.shape[0]
    pairs, _ = input_pairs(N)
    P = pairs.shape[0]
    blocks = _joint_kernels(path_K, path_g, K)
    big = torch.block_diag(*blocks)
    base = 2 * N * torch.arange(h)
    bm = base.repeat_interleave(P * P)
    r = torch.arange(P).repeat_interleave(P).repeat(h)
    q = torch.arange(P).repeat(P * h)
    idx4 = torch.stack(
        [bm + pairs[r, 0], bm + pairs[r, 1], bm + N + pairs[q, 0], bm + N + pairs[q, 1]], dim=1
    )
    b2 = base.repeat_interleave(P)
    p2 = torch.arange(P).repeat(h)
    idx_m = torch.stack([b2 + pairs[p2, 0], b2 + pairs[p2, 1]], dim=1)
    idx_l = idx_m + N
    mean_m = {o: _slot_products(act, big, idx_m, (o, o), tol).reshape(h, P) for o in (0, 1)}
    mean_l = {o: _slot_products(act, big, idx_l, (o, o), tol).reshape(h, P) for o in (0, 1)}
    out = {}
    for x, ox in (("s", 0), ("d", 1)):
        for y, oy in (("s", 0), ("d", 1)):
            E = _slot_products(act, big, idx4, (ox, ox, oy, oy), tol).reshape(h, P, P)
            out[x + y] = E - mean_m[ox][:, :, None] * mean_l[oy][:, None, :]
    return out


def _empty_residual(N: int) -> dict[str, Tensor]:
    """Path coefficients of χ and φ_b with no earlier layer on the path."""
    P = N * (N + 1) // 2
    return {
        "path_cs": torch.zeros((0, P, P), dtype=torch.float64),
        "path_cd": torch.zeros((0, P, P), dtype=torch.float64),
        "path_cb": torch.zeros((0,) + (N,) * 4, dtype=torch.float64),
    }


def _residual_first(g: Tensor) -> dict[str, Tensor]:
    """The residual bookkeeping of layer 1 (Gaussian, deterministic NTK): all zero; the F form
    Q over the basis (1, z^{(1)}) (one input)."""
    N = g.shape[0]
    P = N * (N + 1) // 2
    zero = torch.zeros((P, P), dtype=torch.float64)
    return {
        "Ap": zero,
        "Xi": zero,
        "Zc": zero,
        **_empty_residual(N),
        "Fq": torch.zeros((N, N, 1 + N, 1 + N), dtype=torch.float64),
        "path_P1": torch.zeros((0, N, N, N), dtype=torch.float64),
        "path_s1": torch.zeros((0, N, N), dtype=torch.float64),
    }


def residual_fluctuation_step(
    net: MLP, layer: int, prev: LayerState, m: LayerMoments
) -> dict[str, Tensor]:
    """D, F, A, B of a network with residual layers, layer ℓ → ℓ+1 = ``layer`` (the derivation
    is in the comment above :func:`_path_rule`). The path (its layers' K, g and ψ
    coefficients) is the vertex's (:func:`pdlt.theory.vertex.residual_vertex_step`); this step
    carries χ's and φ_b's coefficients on the same layers (:func:`_residual_ADB`, any N) and
    the forms Q^{ac} of F (:func:`_residual_F`), on N inputs."""
    gamma = net.skip[layer - 1]
    keep = None if gamma == 0.0 else extended_path(prev.path_g, gamma)[1]
    out = _residual_ADB(net, layer, prev, m, keep)
    if keep is None:
        keep = torch.zeros(prev.path_K.shape[0] + 1, dtype=torch.bool)
    return out | _residual_F(net, layer, prev, m, keep)


def _residual_ADB(
    net: MLP, layer: int, prev: LayerState, m: LayerMoments, keep: Tensor | None
) -> dict[str, Tensor]:
    """A, B, D of a residual layer ℓ → ℓ+1 on N inputs (derivation above :func:`_path_rule`,
    over input pairs p = (a, b)): χ and ψ are P-vectors, a = diag(γ² + C_W⟨σ'σ'⟩_p),
    b_pq = ∂⟨X_p⟩/∂K_q (the symmetric-variable derivative, as the vertex's J), and the path
    coefficients of χ (on φ_ss, φ_dd of each earlier layer) are P×P matrices; the B form's
    φ_b coefficients are one number per (a, b, c, d) and layer. ``keep``: the layers of the
    path of ℓ+1 (None: the path is cut)."""
    i = layer - 1
    C_W, lam_W, gamma = net.C_W[i], net.lambda_W[i], net.skip[i]
    g2 = gamma * gamma
    r = width_ratio(net, layer)
    t = m.fluctuation_terms
    N = m.N
    pairs, index = input_pairs(N)
    pa, pb = pairs[:, 0], pairs[:, 1]
    P = pairs.shape[0]
    K, Th, dd, ss = m.K, prev.Theta, m.dd, m.ss
    Th_p, dd_p, ss_p = Th[pa, pb], dd[pa, pb], ss[pa, pb]

    def to_pairs(T: Tensor) -> Tensor:  # (N, N, N, N) → (P, P)
        return T[pa[:, None], pb[:, None], pa[None, :], pb[None, :]]

    # symmetric-variable derivative ∂/∂K_q = ½⟨∂_c∂_d⟩ (c = d) or ⟨∂_c∂_d⟩ (c ≠ d)
    half = torch.where(pa == pb, 0.5, 1.0)
    P_X = lam_W * t["P_ss"] + C_W * Th[:, :, None, None] * t["P_dd"]  # ⟨∂∂X⟩ (a, b, β1, β2)
    bmat = to_pairs(P_X) * half[None, :]
    a = g2 + C_W * dd_p  # (P,)
    A_psi = residual_jacobian(net, layer, m)
    cov_ss = to_pairs(t["ssss"]) - torch.outer(ss_p, ss_p)
    cov_ds = to_pairs(t["ddss"]) - torch.outer(dd_p, ss_p)  # Cov(σ'σ'_p, σσ_q)
    cov_dd = to_pairs(t["dddd"]) - torch.outer(dd_p, dd_p)
    cW = C_W * Th_p
    var_e = (
        lam_W**2 * cov_ss
        + lam_W * (cW[:, None] * cov_ds + cov_ds.T * cW[None, :])
        + cW[:, None] * cW[None, :] * cov_dd
    )
    cov_e_phi = lam_W * cov_ss + cW[:, None] * cov_ds  # Cov(e_p, σσ_q)
    h = prev.path_K.shape[0]
    cs, cd, cb, B_psi = prev.path_cs, prev.path_cd, prev.path_cb, prev.path_B
    zero = torch.zeros((P, P), dtype=torch.float64)
    E_R = torch.zeros((N,) * 4, dtype=torch.float64)
    if h:
        Q = path_slot_covariances(m.act, prev.path_K, prev.path_g, K, m.tol)
        y_ps = torch.einsum("mpr,mrq->pq", B_psi, Q["ss"])  # Cov(ψ_p, σσ_q(z^{(ℓ)}))
        y_pd = torch.einsum("mpr,mrq->pq", B_psi, Q["sd"])
        y_cs = torch.einsum("mpr,mrq->pq", cs, Q["ss"]) + torch.einsum("mpr,mrq->pq", cd, Q["ds"])
        y_cd = torch.einsum("mpr,mrq->pq", cs, Q["sd"]) + torch.einsum("mpr,mrq->pq", cd, Q["dd"])
        # E[σ'_aσ'_b(z^{(ℓ)}) φ_R;abcd], φ_R;abcd = Σ_m cb_m;abcd φ_dd;cd(z^{(m)})
        Qdd = Q["dd"][:, index[:, :, None, None], index[None, None, :, :]]  # (m, c, d, a, b)
        E_R = torch.einsum("mabcd,mcdab->abcd", cb, Qdd)
    else:
        y_ps = y_pd = y_cs = y_cd = zero
    cov_psi_e = lam_W * y_ps + y_pd * cW[None, :]  # Cov(ψ_p, e_q(z^{(ℓ)}))
    cov_chi_e = lam_W * y_cs + y_cd * cW[None, :]
    Psi, X = prev.Psi, prev.X
    A, Xi, Z = prev.Ap, prev.Xi, prev.Zc
    aA = a[:, None] * A * a[None, :]
    aXb = a[:, None] * Xi @ bmat.T
    new_A = r * (aA + aXb + aXb.T + bmat @ Psi @ bmat.T) + var_e
    ce = a[:, None] * cov_chi_e + bmat @ cov_psi_e
    new_A = new_A + ce + ce.T
    new_Xi = r * (a[:, None] * Xi + bmat @ Psi) @ A_psi.T + C_W * (a[:, None] * y_cs + bmat @ y_ps)
    new_Xi = new_Xi + cov_psi_e.T @ A_psi.T + C_W * cov_e_phi
    if gamma != 0.0:
        # Cov(e_p, z_c z_d) = Σ_ef K_ce K_df ⟨∂_e∂_f e_p⟩ (Stein)
        KPK = torch.einsum("ce,abef,df->abcd", K, P_X, K)
        new_Z = g2 * (r * (a[:, None] * Z + bmat @ X) + to_pairs(KPK))
    else:
        new_Z = zero
    # B[a,b,c,d] = n E[Ĥ_ik;ac Ĥ_ik;bd] = β + φ_R(i) + φ_L(k), φ_L;abcd = φ_R;cdab
    ThTh = Th[:, None, :, None] * Th[None, :, None, :]  # Θ_ac Θ_bd
    D_ab, D_cd = dd[:, :, None, None], dd[None, None, :, :]
    new_B = C_W**2 * ThTh * t["dddd"] + g2 * C_W * ThTh * (D_ab + D_cd)
    new_B = new_B + r * (
        (g2 + C_W * D_ab) * (g2 + C_W * D_cd) * prev.B
        + C_W * (g2 + C_W * D_cd) * E_R
        + C_W * (g2 + C_W * D_ab) * E_R.permute(2, 3, 0, 1)
    )
    out = {
        "D": pairs_to_tensor(new_Xi + new_Z, N),
        "A": pairs_to_tensor(new_A, N),
        "B": new_B,
        "Ap": new_A,
        "Xi": new_Xi,
        "Zc": new_Z,
    }
    eye = torch.eye(P, dtype=torch.float64)[None]
    if keep is None:
        out |= _empty_residual(N)
    else:
        out["path_cs"] = torch.cat([a[:, None] * cs + bmat @ B_psi, lam_W * eye])[keep]
        out["path_cd"] = torch.cat([a[:, None] * cd, torch.diag(cW)[None]])[keep]
        new_cb = (g2 * C_W * ThTh)[None]
        out["path_cb"] = torch.cat([r * g2 * (g2 + C_W * D_cd) * cb, new_cb])[keep]
    return out


def _mixed_path_products(act: object, path_K: Tensor, path_g: Tensor, K: Tensor, tol: float):
    """E[σ_{c'}σ'_c(z^{(ℓ)}) σ_{e1}σ'_{e2}(z^{(m)})] per earlier layer m of one path,
    (h, c, c', e1, e2): the cross-layer functions μ of the F form."""
    h, N = path_K.shape[0], K.shape[0]
    big = torch.block_diag(*_joint_kernels(path_K, path_g, K))
    grid = torch.cartesian_prod(*[torch.arange(N)] * 4)  # (c, c', e1, e2)
    base = (2 * N * torch.arange(h)).repeat_interleave(grid.shape[0])
    g = grid.repeat(h, 1)
    idx = torch.stack([base + g[:, 2], base + g[:, 3], base + N + g[:, 1], base + N + g[:, 0]], 1)
    return _slot_products(act, big, idx, (0, 1, 0, 1), tol).reshape((h,) + (N,) * 4)


def _residual_F(
    net: MLP, layer: int, prev: LayerState, m: LayerMoments, keep: Tensor
) -> dict[str, Tensor]:
    """F^{(ℓ+1)} and the forms Q^{ac} of q(i, k)_{ac} = n E[Ĥ_ik;ac | paths] over the basis
    f = (1, z_path, z^{(ℓ)}, s_path) with s_{e1e2} = σ_{e1}σ'_{e2} (N² per layer); see the
    comment above :func:`_path_rule` (written there for one input) — on N inputs ε̃ = G⁻¹ε replaces ε/G, and
    the s functions, the μ's and α carry input indices:

        q' = ε̃_iᵀα^{ac}ε̃_k + γC_WΘ_ac(ε̃_k·s_{·c}(i) + ε̃_i·s_{·a}(k))
             + rγC_W(f(i)ᵀQ^{ac}μ^{cᵀ}ε̃_k + ε̃_iᵀμ^aQ^{ac}f(k)) + rγ²q,
        α^{ac} = C_W²(Θ_ac⟨σ_{a'}σ'_aσ'_cσ_{c'}⟩ + r μ^aQ^{ac}μ^{cᵀ}),  μ^c_{c'β} = E[σ_{c'}σ'_c f_β],

    and F[a, b, c, d] = n E[Ĥ_ik;ac z_i;b z_k;d] = ν^bᵀQ'^{ac}ν^d, ν^b_β = E[f_β z^{(ℓ+1)}_b]."""
    i = layer - 1
    C_W, C_b, gamma = net.C_W[i], net.C_b[i], net.skip[i]
    r = width_ratio(net, layer)
    t = m.fluctuation_terms
    N, K, Th = m.N, m.K, prev.Theta
    h = prev.path_K.shape[0]
    Km, g = prev.path_K, prev.path_g
    P1 = t["P1"]  # ⟨∂_β(σ'_aσ_b)⟩ (a, b, β)
    S1 = m.local.mean(0, 1)  # ⟨σ_aσ'_b⟩
    G = C_b + C_W * m.ss
    Ginv = torch.linalg.inv(G)
    hN, hN2, N2 = h * N, h * N * N, N * N
    D_old = 1 + hN + N + hN2
    D_full = 1 + hN + 2 * N + hN2 + N2
    zc, zn, sp, sc = 1 + hN, 1 + hN + N, 1 + hN + 2 * N, 1 + hN + 2 * N + hN2  # block starts
    # μ^c over the old basis: (c, c', D_old)
    mu = torch.zeros((N, N, D_old), dtype=torch.float64)
    mu[:, :, 0] = S1.T
    if h:
        mu[:, :, 1:zc] = torch.einsum("m,meb,kcb->kcme", g, Km, P1).reshape(N, N, hN)
        E_s = _mixed_path_products(m.act, Km, g, K, m.tol)  # (m, c, c', e1, e2)
        mu[:, :, zc + N :] = E_s.permute(1, 2, 0, 3, 4).reshape(N, N, hN2)
    mu[:, :, zc : zc + N] = torch.einsum("eb,kcb->kce", K, P1)
    Q = prev.Fq  # (a, c, D_old, D_old)
    old = torch.cat([torch.arange(zn), torch.arange(sp, sp + hN2)])  # old basis → full
    Qe = torch.zeros((N, N, D_full, D_full), dtype=torch.float64)
    Qe[:, :, old[:, None], old[None, :]] = Q
    mue = torch.zeros((N, N, D_full), dtype=torch.float64)
    mue[:, :, old] = mu
    E = torch.zeros((N, D_full), dtype=torch.float64)  # ε̃ = E f
    E[:, zn : zn + N] = Ginv
    E[:, zc : zc + N] = -gamma * Ginv
    four = t["ddss"]  # ⟨σ'_aσ'_cσ_{a'}σ_{c'}⟩ indexed (a, c, a', c')
    muQmu = torch.einsum("axu,acuv,cyv->acxy", mue, Qe, mue)
    alpha = C_W**2 * (Th[:, :, None, None] * four + r * muQmu)
    Qn = torch.einsum("xu,acxy,yv->acuv", E, alpha, E)
    # s_{c'c}(i) ε̃_{k;c'}: the s^{(ℓ)} row of index (c', c) meets ε̃_{c'}
    Ssel = torch.zeros((N, D_full, N), dtype=torch.float64)  # (c, full row, c')
    cc = torch.arange(N)
    for_c = sc + cc[None, :] * N + cc[:, None]  # (c, c') → index of s_{c'c}
    Ssel[cc[:, None], for_c, cc[None, :]] = 1.0
    SE = torch.einsum("cuy,yv->cuv", Ssel, E)  # (c, D, D)
    two = gamma * C_W * Th[:, :, None, None] * SE[None, :, :, :]  # f(i)ᵀ S^c E f(k)
    three = gamma * C_W * Th[:, :, None, None] * SE[:, None].transpose(-1, -2)
    Qn = Qn + two + three
    QmuE = torch.einsum("acuw,cyw,yv->acuv", Qe, mue, E)
    # the mirror ε̃_iᵀμ^aQ^{ac}f(k) is the (k, i) term of QmuE^{ca}, as Q^{ac} = (Q^{ca})ᵀ
    Qn = Qn + r * gamma * C_W * (QmuE + QmuE.permute(1, 0, 3, 2)) + r * gamma**2 * Qe
    # ν^b over the full basis
    nu = torch.zeros((N, D_full), dtype=torch.float64)
    if h:
        nu[:, 1:zc] = (gamma * g[:, None, None] * Km).permute(2, 0, 1).reshape(N, hN)
        P1m = prev.path_P1  # (m, a, b, β)
        s_z = torch.einsum("m,mbq,mxeq->bmex", g, Km, P1m)  # E[σ_eσ'_x(z^{(m)}) z^{(ℓ)}_b]
        nu[:, sp:sc] = gamma * s_z.reshape(N, hN2)
    nu[:, zc:zn] = gamma * K
    nu[:, zn : zn + N] = G + gamma**2 * K
    nu[:, sc:] = gamma * torch.einsum("bq,xeq->bex", K, P1).reshape(N, N2)
    F = torch.einsum("bu,acuv,dv->abcd", nu, Qn, nu)
    # reduce to the basis of layer ℓ+1: (1, z_kept, z^{(ℓ+1)}, s_kept)
    s_means = torch.cat([prev.path_s1, S1[None]])  # (h + 1, e1, e2)
    k = int(keep.sum())
    kept = torch.nonzero(keep).flatten()
    dropped = torch.nonzero(~keep).flatten()
    T = torch.zeros((1 + (k + 1) * N + k * N2, D_full), dtype=torch.float64)
    T[0, 0] = 1.0
    ar, ar2 = torch.arange(N), torch.arange(N2)
    for j_new, j in enumerate(kept.tolist()):  # ≤ depth layers: the form's blocks
        T[1 + j_new * N + ar, 1 + j * N + ar] = 1.0
        T[1 + (k + 1) * N + j_new * N2 + ar2, sp + j * N2 + ar2] = 1.0
    T[1 + k * N + ar, zn + ar] = 1.0
    for j in dropped.tolist():
        T[0, sp + j * N2 + ar2] = s_means[j].reshape(N2)
    Fq = torch.einsum("xu,acuv,yv->acxy", T, Qn, T)
    P1s = torch.cat([prev.path_P1, P1[None]])[keep]
    return {"F": F, "Fq": Fq, "path_P1": P1s, "path_s1": s_means[keep]}
