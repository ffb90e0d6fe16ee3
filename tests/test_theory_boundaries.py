"""The theory entries at their boundaries (issue 15, items 3, 9, 11): one validation rule for
every scalar (pdlt._validation), a memory cap honoured by the 3-/4-input cubature with a clear
error, overflow at the first layer reported as a bad input; and a property-based test that
valid inputs give finite, symmetric, positive semi-definite kernels and NTKs."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pdlt
from pdlt.theory.criticality import chi_parallel, chi_perp

BAD_SCALARS = [
    ("1", TypeError),
    (True, TypeError),
    (1 + 0j, TypeError),
    (float("nan"), ValueError),
    (float("inf"), ValueError),
]


@pytest.mark.parametrize(("bad", "exc"), BAD_SCALARS)
def test_criticality_entries_reject_bad_scalars(bad, exc):
    with pytest.raises(exc, match="C_b"):
        pdlt.critical_line("tanh", bad)
    with pytest.raises(exc, match="C_W"):
        pdlt.criticality("tanh", C_W=bad)
    with pytest.raises(exc, match="C_b"):
        pdlt.criticality("tanh", C_b=bad)
    with pytest.raises(exc, match="C_W"):
        chi_perp("tanh", 1.0, C_W=bad)
    with pytest.raises(exc, match="K"):
        chi_parallel("tanh", bad)
    with pytest.raises(exc, match="C_W"):
        pdlt.learning_rates("tanh", 4, method="numerical", C_W=bad)
    with pytest.raises(exc, match="C_b"):
        pdlt.learning_rates("tanh", 4, method="numerical", C_W=1.0, C_b=bad)
    with pytest.raises(exc, match="tol"):
        pdlt.four_point_vertex(pdlt.MLP("tanh", 2, 8, 1), [[1.0]], tol=bad)


def test_numpy_scalars_and_arrays_are_accepted_strings_and_bools_in_grids_are_not():
    f32 = np.float32(1.0)
    assert pdlt.criticality("tanh", C_W=f32, C_b=np.float64(0.0)).C_W == 1.0
    assert len(pdlt.learning_rates("tanh", 3, lambda_b=f32, lambda_W=np.array(1.0)).lambda_b) == 3
    assert pdlt.learning_rates("gelu", 3, method="numerical", C_W=f32).method == "numerical"
    with pytest.raises(TypeError, match="C_b"):
        pdlt.phase_diagram("tanh", C_b=[True, False])
    with pytest.raises(TypeError, match="C_W"):
        pdlt.phase_diagram("tanh", C_W=["1", "2"])
    with pytest.raises(ValueError, match="C_W"):
        pdlt.phase_diagram("tanh", C_W=[1.0, math.nan])
    with pytest.raises(TypeError, match="K"):
        chi_perp("tanh", np.array([1 + 1j]))
    with pytest.raises(ValueError, match="tol"):
        pdlt.metric(pdlt.MLP("tanh", 2, 8, 1), [[1.0]], tol=1.5)
    with pytest.raises(TypeError, match="max_memory"):
        pdlt.kernel_correction(pdlt.MLP("tanh", 2, 8, 1), [[1.0]], max_memory=1.5)


def test_first_layer_overflow_is_a_clear_error():
    """Issue 15 item 9: was OverflowError from int(inf) at depth 3 and K = inf at depth 1."""
    for depth in (1, 3):
        with pytest.raises(ValueError, match="layer 1.*rescale the inputs"):
            pdlt.kernel(pdlt.MLP("tanh", depth, 8, 3), np.full((1, 3), 1e160))
        with pytest.raises(ValueError, match="layer 1"):
            pdlt.ntk(pdlt.MLP("relu", depth, 8, 3, C_W=2.0), np.full((1, 3), 1e160))


def test_memory_cap_is_honoured_with_a_clear_error(monkeypatch):
    """Issue 15 item 3: three inputs at C_W = 100 took 19 s and 5.1 GB; now the 3-input rule
    cut at the transition region needs ~300 MB per integral, and a cap below that is an error
    that names the cap and both ways to raise it."""
    net = pdlt.MLP("tanh", 2, 8, 3, C_W=100.0)
    x = np.eye(3) * 3**0.5
    with pytest.raises(ValueError, match=r"memory cap of 2 MiB.*max_memory=.*PDLT_MAX_MEMORY"):
        pdlt.four_point_vertex(net, x, max_memory=2 * 2**20)
    monkeypatch.setenv("PDLT_MAX_MEMORY", "2M")
    with pytest.raises(ValueError, match="memory cap of 2 MiB"):
        pdlt.kernel_correction(net, x)
    monkeypatch.setenv("PDLT_MAX_MEMORY", "lots")
    with pytest.raises(ValueError, match="PDLT_MAX_MEMORY"):
        pdlt.four_point_vertex(net, x)
    monkeypatch.delenv("PDLT_MAX_MEMORY")
    V = pdlt.four_point_vertex(net, x).V_pairs[-1]
    assert np.isfinite(V).all()
    # independent inputs, odd σ: V_(aa)(aa) = C_W² Var(σ²) at K = 100, the rest ~0
    assert V[0, 0] == pytest.approx(467.92, rel=1e-4)


# --------------------------------------------------------------------------------------------
# property-based: valid → finite, symmetric, PSD; invalid → named error

ACTS = st.sampled_from(["tanh", "relu", "gelu", "swish", "sigmoid", "erf", "elu", "linear"])


@settings(max_examples=25)
@given(
    act=ACTS,
    depth=st.integers(1, 6),
    C_W=st.floats(0.1, 4.0),
    C_b=st.floats(0.0, 1.0),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_kernel_and_ntk_are_finite_symmetric_psd(act, depth, C_W, C_b, scale, seed):
    x = np.random.default_rng(seed).normal(size=(3, 4)) * scale
    net = pdlt.MLP(act, depth, 8, 4, C_W=C_W, C_b=C_b)
    th = pdlt.ntk(net, x)
    for M in (th.K, th.Theta):
        assert np.isfinite(M).all()
        np.testing.assert_allclose(M, np.swapaxes(M, 1, 2), rtol=1e-12, atol=0)
        eig = np.linalg.eigvalsh(M)
        assert (eig >= -1e-9 * np.abs(eig).max(axis=1, keepdims=True)).all()


@settings(max_examples=10)
@given(act=st.sampled_from(["tanh", "relu", "gelu"]), C_W=st.floats(0.5, 2.0))
def test_vertex_is_symmetric_and_psd(act, C_W):
    """V_(ab)(cd) is the covariance of the pair products z_a z_b (times n): symmetric and PSD
    as a P×P matrix."""
    x = np.array([[1.0, 0.0], [0.3, 0.8]])
    V = pdlt.four_point_vertex(pdlt.MLP(act, 3, 8, 2, C_W=C_W), x).V_pairs
    assert np.isfinite(V).all()
    np.testing.assert_allclose(V, np.swapaxes(V, 1, 2), rtol=1e-10, atol=1e-14)
    eig = np.linalg.eigvalsh(V)
    assert (eig >= -1e-8 * np.abs(eig).max(axis=1, keepdims=True) - 1e-14).all()


@settings(max_examples=40)
@given(
    bad=st.one_of(
        st.text(max_size=3),
        st.booleans(),
        st.complex_numbers(allow_nan=False, allow_infinity=False).filter(lambda z: z.imag != 0),
        st.sampled_from([math.nan, math.inf, -math.inf, -1.0]),
    ),
    which=st.sampled_from(["criticality C_W", "criticality C_b", "critical_line", "lr C_W"]),
)
def test_invalid_scalars_raise_named_errors(bad, which):
    name = which.split()[-1] if " " in which else "C_b"
    call = {
        "criticality C_W": lambda: pdlt.criticality("tanh", C_W=bad),
        "criticality C_b": lambda: pdlt.criticality("tanh", C_b=bad),
        "critical_line": lambda: pdlt.critical_line("tanh", bad),
        "lr C_W": lambda: pdlt.learning_rates("gelu", 3, method="numerical", C_W=bad),
    }[which]
    with pytest.raises((TypeError, ValueError), match=name):
        call()
