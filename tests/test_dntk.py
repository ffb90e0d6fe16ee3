"""The structured empirical dNTK / ddNTKs against nested autograd, and their estimators P, Q,
R, S, T, U, Θ1 against Monte Carlo-independent predictions.

Predictions used here (test-only helpers; the library's theory lives in pdlt.theory):
* layer 2, any number of inputs: the statistics are exact at O(1/n_1) and equal the "local"
  terms of 02-ntk.md §5.3, §6.2 (re-derived for this file from the layer-2 forward equation),
  Gaussian expectations over z^{(1)} ~ N(0, K^{(1)}) taken by direct sampling;
* deeper layers, one input: the single-input recursions of 02-ntk.md §3.4, §5.3, §6.2.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import jacfwd, jacrev

import pdlt
from pdlt.experiment.dntk import _derivatives, chunk_dntk
from pdlt.experiment.ensemble import forward_chunks
from pdlt.network import validate_inputs

# --------------------------------------------------------------------------------------------
# nested autograd on the flattened parameter vector


def _autograd_dntk(net, chunk, m, x, layer, idx):
    """Ĥ, dĤ, dd_IĤ, dd_IIĤ of network m from derivatives of z w.r.t. the flattened parameters
    (jacrev, jacfwd∘jacrev, jacfwd∘jacfwd∘jacrev) contracted with the diagonal metric λ
    (λ_b, λ_W/n_{ℓ−1}). Directions a = i·N + δ."""
    params, lam = [], []
    for ell in range(layer):
        W, b = chunk.W[ell][m], chunk.b[ell][m][:, 0]
        params += [W, b]
        lam += [
            torch.full((W.numel(),), net.lambda_W[ell] / net.widths[ell], dtype=torch.float64),
            torch.full((b.numel(),), net.lambda_b[ell], dtype=torch.float64),
        ]
    shapes = [p.shape for p in params]
    theta0 = torch.cat([p.reshape(-1) for p in params])
    lam = torch.cat(lam)

    def f(theta):
        h, off, z = x.T, 0, None
        for ell in range(layer):
            W = theta[off : off + shapes[2 * ell].numel()].view(shapes[2 * ell])
            off += W.numel()
            b = theta[off : off + shapes[2 * ell + 1].numel()]
            off += b.numel()
            z = W @ h + b[:, None] + (net.skip[ell] * z if net.skip[ell] else 0.0)
            h = net.activation(z)
        return z[idx].reshape(-1)

    J = jacrev(f)(theta0)
    D2 = jacfwd(jacrev(f))(theta0)
    D3 = jacfwd(jacfwd(jacrev(f)))(theta0)
    v = J * lam
    u = torch.einsum("apq,bq->abp", D2, v)  # Hess z_a · v_b
    return {
        "H": J @ v.T,
        "dH": torch.einsum("apq,bp,cq->abc", D2, v, v),
        "ddI": torch.einsum("apqr,bp,cq,dr->abcd", D3, v, v, v),
        "ddII": torch.einsum("acp,bdp->abcd", u * lam, u),
    }


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_structured_equals_nested_autograd_residual(act):
    """Residual layers (per-layer γ, a plain layer between, the output layer residual too):
    the skip enters the backward signals J, their tangents J̇, J̈ and the forward tangents ż, ż̇;
    equal to nested autograd to round-off."""
    net = pdlt.MLP(
        act, depth=5, width=4, input_dim=3, output_dim=4, C_b=0.3, C_W=[1.5, 1.1, 0.9, 1.2, 0.8],
        lambda_b=[0.7, 0.2, 1.1, 0.4, 0.9], lambda_W=[1.3, 0.5, 0.9, 2.0, 0.6],
        skip=[0.0, 0.6, 0.0, 0.5, 0.7],
    )  # fmt: skip
    x = validate_inputs(net, np.random.default_rng(1).normal(size=(2, 3)))
    chunk = next(forward_chunks(net, x, 2, seed=7, dtype=torch.float64))
    for layer, idx in [(2, [3, 1]), (5, [0, 3])]:
        _assert_equals_autograd(net, chunk, x, layer, idx)
    H = pdlt.empirical_ntk(net, x, 2, seed=7, dtype="float64").H
    dn = pdlt.empirical_dntk(net, x, 2, seed=7, dtype="float64", ddntk=False)
    torch.testing.assert_close(dn.H, H, rtol=0, atol=1e-12)


def _assert_equals_autograd(net, chunk, x, layer: int, idx: list) -> dict:
    """chunk_dntk of both networks of a chunk against nested autograd, to round-off; returns
    the structured result."""
    out = chunk_dntk(net, chunk, layer, idx)
    for m in range(2):
        ref = _autograd_dntk(net, chunk, m, x, layer, idx)
        for name, r in ref.items():
            want = _book_order(r, len(idx), 2)
            scale = max(1.0, want.abs().max().item())
            torch.testing.assert_close(out[name][m], want, rtol=0, atol=1e-13 * scale)
    return out


def _book_order(t: torch.Tensor, k: int, N: int) -> torch.Tensor:
    """(K, ..., K) over directions a = i·N + δ → (k, ..., k, N, ..., N)."""
    r = t.ndim
    return t.reshape(*([k, N] * r)).permute(*range(0, 2 * r, 2), *range(1, 2 * r, 2))


@pytest.mark.parametrize("act", ["tanh", "relu", "gelu", "user"])
def test_structured_equals_nested_autograd(act):
    """Same networks, float64, non-uniform widths and per-layer constants: equal to round-off."""
    if act == "user":  # a user callable: σ''' by autograd through σ itself
        act = pdlt.activation(lambda z: torch.sin(z) + 0.3 * z * torch.tanh(z))
    net = pdlt.MLP(
        act,
        depth=4,
        width=[5, 4, 3],
        input_dim=3,
        output_dim=3,
        C_b=0.3,
        C_W=[1.5, 1.1, 2.0, 0.9],
        lambda_b=[0.7, 0.2, 1.1, 0.4],
        lambda_W=[1.3, 0.5, 0.9, 2.0],
    )
    x = validate_inputs(net, np.random.default_rng(0).normal(size=(2, 3)))
    chunk = next(forward_chunks(net, x, 2, seed=5, dtype=torch.float64))
    for layer, idx in [(1, [1, 0]), (2, [3, 1]), (3, [2, 0]), (4, [0, 1, 2])]:
        out = _assert_equals_autograd(net, chunk, x, layer, idx)
        if layer == 1:  # z^{(1)} is linear in the parameters
            assert out["dH"].abs().max() == 0 and out["ddII"].abs().max() == 0


def test_empirical_dntk_api_and_symmetries():
    net = pdlt.MLP("tanh", 3, 12, 2, output_dim=3, C_b=0.2, lambda_b=0.5)
    x = np.array([[1.0, 0.4], [-0.5, 0.9]])
    e = pdlt.empirical_dntk(net, x, n_networks=5, seed=2, dtype="float64")
    assert e.dH.shape == (5, 3, 3, 3, 2, 2, 2) and e.ddI.shape == (5,) + (3,) * 4 + (2,) * 4
    assert e.layer == 3 and e.neurons == (0, 1, 2) and "networks=5" in repr(e)
    # the NTK is pdlt.empirical_ntk's, on the same networks
    ntk = pdlt.empirical_ntk(net, x, 5, 2, dtype="float64")
    torch.testing.assert_close(e.H, ntk.H, rtol=0, atol=1e-13)
    # dĤ symmetric in (i1δ1) ↔ (i2δ2); dd_I in its last three pairs; dd_II under (13) ↔ (24)
    torch.testing.assert_close(e.dH, e.dH.permute(0, 1, 3, 2, 4, 6, 5), rtol=0, atol=1e-13)
    for perm in [(0, 1, 3, 2, 4, 5, 7, 6, 8), (0, 1, 2, 4, 3, 5, 6, 8, 7)]:
        torch.testing.assert_close(e.ddI, e.ddI.permute(*perm), rtol=0, atol=1e-12)
    swap = (0, 2, 1, 4, 3, 6, 5, 8, 7)
    torch.testing.assert_close(e.ddII, e.ddII.permute(*swap), rtol=0, atol=1e-12)
    # a layer and a subset of neurons; without the ddNTKs
    sub = pdlt.empirical_dntk(net, x, 5, 2, layer=2, neurons=[4, 1], ddntk=False)
    assert sub.dH.shape == (5, 2, 2, 2, 2, 2, 2) and sub.ddI is None and sub.ddII is None
    full = pdlt.empirical_dntk(net, x, 5, 2, layer=2, neurons=6, ddntk=False)
    torch.testing.assert_close(sub.dH, full.dH[:, [4, 1]][:, :, [4, 1]][:, :, :, [4, 1]])
    for bad, match in [
        (dict(layer=0), "layer"),
        (dict(neurons=[12]), "neurons"),
        (dict(dtype="float16"), "dtype"),
    ]:
        with pytest.raises(ValueError, match=match):
            pdlt.empirical_dntk(net, x, 2, 0, **bad)
    with pytest.raises(ValueError, match="n_networks"):
        pdlt.empirical_dntk(net, x, 0)
    with pytest.raises(TypeError, match="ddntk"):
        pdlt.empirical_dntk(net, x, 2, ddntk="yes")
    with pytest.raises(ValueError, match="output_dim"):
        pdlt.measure(pdlt.MLP("tanh", 2, 8, 2), x, 4, statistics=("dntk",))


def test_estimators_are_the_stated_moments():
    """measure()'s P..U are n_{ℓ−1} × the stated neuron-pair averages of the per-network
    tensors of empirical_dntk (same seed, same networks), averaged over networks; written out
    here pair by pair, with the sample orders of the decompositions (02-ntk.md §5.3, §6.2)."""
    net = pdlt.MLP("gelu", 3, 10, 2, output_dim=3, C_b=0.1, C_W=1.3)
    x = np.array([[1.0, 0.4], [-0.5, 0.9]])
    M = 6
    ms = pdlt.measure(net, x, M, seed=4, statistics=("dntk", "ddntk"), dtype="float64")
    assert ms.P.shape == ms.U_err.shape == (3, 2, 2, 2, 2)
    for s in "PQRSTU":
        assert (getattr(ms, s)[0] == 0).all() and (getattr(ms, s + "_err")[0] == 0).all()
    for layer in (2, 3):
        k = min(4, net.widths[layer])  # the estimators' neurons
        e = pdlt.empirical_dntk(net, x, M, 4, layer=layer, neurons=k, dtype="float64")
        z = _layer_z(net, x, M, 4, layer)[:, :k]
        pairs = [(i, j) for i in range(k) for j in range(k) if i != j]
        ddI, ddII = e.ddI, e.ddII
        want = {s: 0.0 for s in "PQRSTU"}
        for i, j in pairs:
            # [δ0, δ1, δ2, δ3] of the decompositions
            want["P"] = want["P"] + (e.dH[:, i, j, j, :, :, :, None] * z[:, i, None, None, None])
            want["Q"] = want["Q"] + (e.dH[:, i, i, j, :, :, :, None] * z[:, j, None, None, None])
            want["R"] = want["R"] + ddI[:, i, i, j, j]
            want["S"] = want["S"] + ddII[:, i, i, j, j]
            # T_{δ1δ3δ4δ2} = n E[dd_II_{ijij;δ1δ2δ3δ4}], U_{δ1δ4δ2δ3} = n E[dd_II_{ijji;δ1δ2δ3δ4}]
            want["T"] = want["T"] + torch.einsum("mpsqr->mpqrs", ddII[:, i, j, i, j])
            want["U"] = want["U"] + torch.einsum("mprsq->mpqrs", ddII[:, i, j, j, i])
        n = net.widths[layer - 1]
        for s in "PQRSTU":
            w = n * (want[s] / len(pairs))
            np.testing.assert_allclose(getattr(ms, s)[layer - 1], w.mean(0).numpy(), rtol=1e-10)
            np.testing.assert_allclose(
                getattr(ms, s + "_err")[layer - 1], (w.std(0) / M**0.5).numpy(), rtol=1e-8
            )


def _layer_z(net, x, M, seed, layer):
    xt = validate_inputs(net, x)
    return torch.cat(
        [c.z[layer - 1] for c in forward_chunks(net, xt, M, seed, dtype=torch.float64)]
    )


# --------------------------------------------------------------------------------------------
# layer 2, several inputs: exact local terms


def _layer2_terms(net, x, samples=400_000, seed=11):
    """P..U of layer 2 (all exact at O(1/n_1)) with their sampling errors: per-sample values of
    the local-term formulas over z^{(1)} ~ N(0, K^{(1)}), Θ = Θ^{(1)} (index orders as in
    pdlt.experiment.dntk's docstring)."""
    G = x @ x.T / x.shape[1]
    K1 = net.C_b[0] + net.C_W[0] * G
    Th = net.lambda_b[0] + net.lambda_W[0] * G
    cw, lw = net.C_W[1], net.lambda_W[1]
    rng = np.random.default_rng(seed)
    z = torch.from_numpy(rng.multivariate_normal(np.zeros(len(x)), K1, size=samples))
    s0 = net.activation(z)
    s1, s2, s3 = _derivatives(net.activation, z, True)
    T = torch.from_numpy(Th)
    e = torch.einsum
    per = {
        "P": cw**2 * e("pq,pr,mp,mq,mr,ms->mpqrs", T, T, s2, s1, s1, s0),
        "Q": lw * cw * e("pr,mp,mq,mr,ms->mpqrs", T, s1, s0, s1, s0)
        + cw**2 * e("pq,pr,mp,mq,mr,ms->mpqrs", T, T, s2, s1, s1, s0),
        "R": lw * cw * e("pr,ps,mp,mq,mr,ms->mpqrs", T, T, s2, s0, s1, s1)
        + cw**2 * e("pq,pr,ps,mp,mq,mr,ms->mpqrs", T, T, T, s3, s1, s1, s1),
        "S": lw * cw * e("pr,qs,mp,mq,mr,ms->mpqrs", T, T, s1, s1, s1, s1)
        + cw**2 * e("pq,pr,qs,mp,mq,mr,ms->mpqrs", T, T, T, s2, s2, s1, s1),
        # T[p,q,r,s] = T_{δ1δ3δ4δ2} with δ1 = p, δ3 = q, δ4 = r, δ2 = s
        "T": lw**2 * e("ps,mp,mq,ms,mr->mpqrs", T, s1, s0, s1, s0)
        + lw * cw * e("sr,ps,mp,mq,ms,mr->mpqrs", T, T, s1, s0, s2, s1)
        + lw * cw * e("pq,ps,mp,mq,ms,mr->mpqrs", T, T, s2, s1, s1, s0)
        + cw**2 * e("ps,pq,sr,mp,ms,mq,mr->mpqrs", T, T, T, s2, s2, s1, s1),
        # U[p,q,r,s] = U_{δ1δ4δ2δ3} with δ1 = p, δ4 = q, δ2 = r, δ3 = s
        "U": cw**2 * e("pr,ps,rq,mp,mr,ms,mq->mpqrs", T, T, T, s2, s2, s1, s1),
    }
    return {k: (v.mean(0).numpy(), (v.std(0) / samples**0.5).numpy()) for k, v in per.items()}


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_layer2_statistics_match_exact_local_terms(act):
    """Two inputs, two widths: n_1 × moment equals the width-independent local term within
    4σ (MC and sampling errors combined) — the index conventions of every estimator."""
    x = np.array([[1.0, 0.5, -0.3], [0.2, -1.1, 0.8]])
    for n in (16, 32):
        net = pdlt.MLP(
            act,
            2,
            n,
            3,
            output_dim=4,
            C_b=0.1,
            C_W=[1.2, 1.5],
            lambda_b=[0.5, 0.8],
            lambda_W=[1.5, 0.7],
        )
        th = _layer2_terms(net, x)
        ms = pdlt.measure(net, x, 1500, seed=n, statistics=("dntk", "ddntk"), dtype="float64")
        for s in "PQRSTU":
            want, werr = th[s]
            got, gerr = getattr(ms, s)[1], getattr(ms, s + "_err")[1]
            tol = 4 * np.sqrt(gerr**2 + werr**2) + 1e-12
            assert (np.abs(got - want) <= tol).all(), (act, n, s, got, want, tol)
            if act == "relu" and s in "PRU":  # σ'' = σ''' = 0: exactly zero in every network
                assert np.abs(got).max() < 1e-12


# --------------------------------------------------------------------------------------------
# deeper layers, one input: the single-input recursions of 02-ntk.md (test-only helper)


def _single_input_recursions(net, x2: float) -> dict[str, np.ndarray]:
    """Per-layer K, Θ and the O(1/n) coefficients V, D, F, B, P, Q, R, S, T, U, G1, H1 of a
    single input with |x|²/n_0 = x2, iterated with the recursions of 02-ntk.md §3.4, §3.5, §5.3,
    §6.2 (Gauss–Hermite quadrature, 160 nodes: for smooth σ only)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(160)
    weights = weights / weights.sum()
    K = net.C_b[0] + net.C_W[0] * x2
    Th = net.lambda_b[0] + net.lambda_W[0] * x2
    st = dict.fromkeys("V D F B P Q R S T U G1 H1".split(), 0.0)
    out = {key: [val] for key, val in (("K", K), ("Theta", Th), *st.items())}
    for ell in range(1, net.depth):
        cw, cb, lb, lw = net.C_W[ell], net.C_b[ell], net.lambda_b[ell], net.lambda_W[ell]
        r = net.widths[ell] / net.widths[ell - 1]
        z = torch.from_numpy(np.sqrt(K) * nodes)
        s0 = net.activation(z).numpy()
        s1, s2, s3 = (t.numpy() for t in _derivatives(net.activation, z, True))
        zz = z.numpy()

        def E(f, zz=zz):
            return float(weights @ f)

        def d2(g, zz=zz, K=K):  # ⟨g''⟩ by Gaussian integration by parts
            return E(g * (zz**2 - K)) / K**2

        def d4(g, zz=zz, K=K):
            return E(g * (zz**4 - 6 * K * zz**2 + 3 * K**2)) / K**4

        chi_par, chi_perp = cw * E(s1**2 + s0 * s2), cw * E(s1**2)
        omega = lw * E(s1**2 + s0 * s2) + cw * Th * E(s2**2 + s1 * s3)
        X = lw * s0**2 + cw * Th * s1**2
        o = dict(st)
        st["V"] = cw**2 * (E(s0**4) - E(s0**2) ** 2) + r * chi_par**2 * o["V"]
        st["D"] = cw * (E(X * s0**2) - E(X) * E(s0**2)) + r * chi_par * (
            chi_perp * o["D"] + omega * o["V"]
        )
        st["F"] = cw**2 * Th * E(s0**2 * s1**2) + r * chi_par**2 * o["F"]
        st["B"] = cw**2 * Th**2 * E(s1**4) + r * chi_perp**2 * o["B"]
        st["P"] = cw**2 * Th**2 * E(s0 * s1**2 * s2) + r * (
            chi_perp * chi_par * o["P"] + chi_perp * (chi_par - chi_perp) * o["B"]
        )
        st["Q"] = cw * Th * E(s0 * s1**2 * (lw * s0 + cw * Th * s2)) + r * chi_par * (
            chi_perp * o["Q"] + omega * o["F"]
        )
        st["R"] = (
            lw * cw * Th**2 * E(s0 * s1**2 * s2)
            + cw**2 * Th**3 * E(s1**3 * s3)
            + r
            * chi_perp
            * (
                chi_perp * o["R"]
                + lw / cw * ((chi_par - chi_perp) * o["B"] + chi_par * o["P"])
                + cw * Th * (E(s1 * s3) * o["B"] + E(s2**2 + s1 * s3) * o["P"])
            )
        )
        st["S"] = (
            lw * cw * Th**2 * E(s1**4)
            + cw**2 * Th**3 * E(s1**2 * s2**2)
            + r
            * chi_perp
            * (chi_perp * o["S"] + (lw * chi_perp / cw + cw * Th * E(s2**2)) * o["B"])
        )
        st["T"] = Th * E(s1**2 * (lw * s0 + cw * Th * s2) ** 2) + r * (
            chi_perp**2 * o["T"] + 2 * chi_perp * omega * o["Q"] + omega**2 * o["F"]
        )
        st["U"] = cw**2 * Th**3 * E(s1**2 * s2**2) + r * chi_perp**2 * o["U"]
        st["G1"] = r * (chi_par * o["G1"] + cw / 8 * d4(s0**2) * o["V"])
        st["H1"] = r * (
            chi_perp * o["H1"]
            + omega * o["G1"]
            + (lw * d4(s0**2) + cw * Th * d4(s1**2)) / 8 * o["V"]
            + cw * d2(s1**2) * (o["D"] / 2 + o["F"])
        )
        K, Th = cb + cw * E(s0**2), lb + lw * E(s0**2) + chi_perp * Th
        for key, val in (("K", K), ("Theta", Th), *st.items()):
            out[key].append(val)
    return {key: np.array(v) for key, v in out.items()}


def test_single_input_helper_reproduces_the_frozen_ntk():
    """The test helper's Θ, K equal the library's infinite-width theory (a check on the helper)."""
    net = pdlt.MLP("tanh", 4, 8, 2, C_b=0.1, C_W=1.4, lambda_b=0.6, lambda_W=[1.0, 0.5, 2.0, 1.0])
    x = np.array([[1.0, 0.6]])
    th = _single_input_recursions(net, float((x**2).mean()))
    ntk = pdlt.ntk(net, x)
    np.testing.assert_allclose(th["Theta"], ntk.Theta[:, 0, 0], rtol=1e-9)
    np.testing.assert_allclose(th["K"], ntk.K[:, 0, 0], rtol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("C_W,C_b", [(1.0, 0.0), (1.6, 0.2)], ids=["critical", "off-critical"])
def test_single_input_statistics_scale_and_match_recursions(C_W, C_b):
    """tanh, one input, widths 16 and 32 (20000 networks each, ~2 min):
    * layer 2: n × moment is width-independent and equals the recursion (exact at O(1/n_1));
    * layers 3, 4: the 1/n extrapolation 2X₃₂ − X₁₆ agrees with the recursion within 4σ plus
      the neglected order, estimated as 2(X₁₆ − X₃₂)²/|X₃₂| (the 1/n² term if the series in
      1/n is geometric; at layer 4 it is needed for T and U, whose 1/n correction at n = 16 is
      ~50 %). Θ1 = H^{1} is included but its signal is within its error bars here."""
    x = np.array([[1.0, -0.6, 0.8]])
    res = {}
    for n in (16, 32):
        net = pdlt.MLP("tanh", 4, n, 3, output_dim=4, C_b=C_b, C_W=C_W, lambda_b=0.5)
        res[n] = pdlt.measure(
            net, x, 20000, seed=n, statistics=("dntk", "ddntk", "Theta1"), dtype="float64"
        )
    th = _single_input_recursions(net, float((x**2).mean()))
    th["Theta1"] = th["H1"]
    for s in ("P", "Q", "R", "S", "T", "U", "Theta1"):
        for ell in (2, 3, 4):
            a, b = (res[n].values[s][ell - 1].ravel()[0] for n in (16, 32))
            ea, eb = (res[n].errors[s][ell - 1].ravel()[0] for n in (16, 32))
            want = th[s][ell - 1]
            if ell == 2:  # exact at O(1/n_1) at every width
                for got, err in ((a, ea), (b, eb)):
                    assert abs(got - want) <= 4 * err + 1e-3 * abs(want), (s, ell, got, want)
                continue
            extrap, err = 2 * b - a, np.hypot(2 * eb, ea)
            neglected = 2 * (a - b) ** 2 / max(abs(b), 1e-12)
            assert abs(extrap - want) <= 4 * err + neglected, (s, ell, a, b, extrap, want)


def test_empirical_dntk_overflow_raises_like_empirical_ntk():
    """Far from criticality the sampled networks overflow in float32: an error naming the first
    network, never silent NaN (the empirical NTK's rule)."""
    net = pdlt.MLP("relu", 60, 8, 3, output_dim=2, C_W=40.0)
    with pytest.raises(FloatingPointError, match="network 0 is not finite"):
        pdlt.empirical_dntk(net, np.eye(3), 2, ddntk=False)
