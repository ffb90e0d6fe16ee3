"""Spec validation: every bad input is a clear error, every good one a working spec."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pdlt


def test_unknown_activation_names_the_builtins():
    with pytest.raises(ValueError, match="unknown activation 'swishy'.*tanh"):
        pdlt.MLP("swishy", depth=2, width=4, input_dim=1)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"depth": 0}, ValueError, "depth must be ≥ 1"),
        ({"depth": 2.5}, TypeError, "depth must be an int"),
        ({"width": 0}, ValueError, "width must be ≥ 1"),
        ({"width": [4, 4, 4]}, ValueError, "hidden widths"),
        ({"C_W": -1.0}, ValueError, "C_W must be > 0"),
        ({"C_W": 0.0}, ValueError, "C_W must be > 0"),
        ({"C_b": -0.1}, ValueError, "C_b must be ≥ 0"),
        ({"C_b": float("nan")}, ValueError, "C_b must be finite"),
        ({"C_W": [1.0, 2.0]}, ValueError, "one value per layer"),
        ({"input_dim": True}, TypeError, "input_dim must be an int"),
        ({"lambda_W": "fast"}, TypeError, "lambda_W must be a float"),
    ],
)
def test_bad_specs(kwargs, error, match):
    spec = {"activation": "relu", "depth": 3, "width": 4, "input_dim": 2} | kwargs
    with pytest.raises(error, match=match):
        pdlt.MLP(**spec)


@given(
    depth=st.integers(-3, 12),
    width=st.one_of(st.integers(-5, 300), st.floats(allow_nan=True), st.text(max_size=3)),
    C_W=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3)),
    C_b=st.floats(allow_nan=True, allow_infinity=True),
)
def test_spec_is_valid_or_raises_a_clear_error(depth, width, C_W, C_b):
    try:
        net = pdlt.MLP("tanh", depth=depth, width=width, input_dim=3, C_W=C_W, C_b=C_b)
    except (ValueError, TypeError) as exc:
        assert str(exc)  # a message, naming the field
        assert any(k in str(exc) for k in ("depth", "width", "C_W", "C_b"))
        return
    assert net.depth >= 1 and all(w >= 1 for w in net.widths)
    assert all(c > 0 and math.isfinite(c) for c in net.C_W)
    assert all(c >= 0 and math.isfinite(c) for c in net.C_b)


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=9))
def test_inputs_are_valid_or_raise(values):
    net = pdlt.MLP("tanh", depth=2, width=4, input_dim=3)
    x = np.array(values)
    try:
        th = pdlt.kernel(net, x.reshape(-1, 3) if x.size % 3 == 0 else x)
    except ValueError as exc:
        assert "x " in str(exc) or "x must" in str(exc) or "x contains" in str(exc)
        return
    assert np.isfinite(th.K).all()


@pytest.mark.parametrize(
    "x,match",
    [
        (np.ones((4, 2)), r"shape \(N, input_dim\) = \(N, 3\)"),
        (np.array([[1.0, np.nan, 0.0]]), "NaN or inf"),
        (np.array([[1.0, np.inf, 0.0]]), "NaN or inf"),
        (np.ones((0, 3)), "at least one input"),
    ],
)
def test_bad_inputs(x, match):
    net = pdlt.MLP("tanh", depth=2, width=4, input_dim=3)
    with pytest.raises(ValueError, match=match):
        pdlt.kernel(net, x)
    with pytest.raises(ValueError, match=match):
        pdlt.measure(net, x, n_networks=4)


def test_inputs_of_the_wrong_kind():
    net = pdlt.MLP("tanh", depth=2, width=4, input_dim=3)
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        pdlt.kernel(net, "inputs")


def test_user_callable_returning_nan_is_rejected():
    with pytest.raises(ValueError, match="non-finite value"):
        pdlt.activation(lambda z: torch.log(z))
    with pytest.raises(ValueError, match="non-finite"):
        pdlt.MLP(lambda z: torch.sqrt(z), depth=2, width=4, input_dim=1)


def test_user_callable_must_be_elementwise_and_torch():
    with pytest.raises(TypeError, match="elementwise"):
        pdlt.activation(lambda z: z.sum())
    with pytest.raises(TypeError, match="torch.Tensor"):
        pdlt.activation(lambda z: np.tanh(z.numpy()))
    with pytest.raises(TypeError, match="raised"):
        pdlt.activation(lambda z: z + "a")


def test_user_callable_derivatives_by_autograd():
    act = pdlt.activation(lambda z: torch.tanh(z) + 0.1 * z, name="tanh_plus")
    z = torch.linspace(-3, 3, 13, dtype=torch.float64)
    t = torch.tanh(z)
    torch.testing.assert_close(act.d1(z), 1 - t**2 + 0.1)
    torch.testing.assert_close(act.d2(z), -2 * t * (1 - t**2))
    assert act.name == "tanh_plus"


@pytest.mark.parametrize("name", pdlt.activations.BUILTIN_ACTIVATIONS)
def test_builtin_derivatives_match_finite_differences(name):
    act = pdlt.activation(name)
    z = torch.linspace(-3.1, 2.9, 25, dtype=torch.float64)  # avoids the kink at 0
    h = 1e-5
    fd1 = (act(z + h) - act(z - h)) / (2 * h)
    fd2 = (act.d1(z + h) - act.d1(z - h)) / (2 * h)
    # central differences: O(h²) ≈ 1e-10 truncation plus 1e-11/h round-off
    torch.testing.assert_close(act.d1(z), fd1, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(act.d2(z), fd2, atol=1e-6, rtol=1e-6)


def test_torch_module_has_the_spec_variances():
    net = pdlt.MLP("relu", depth=3, width=400, input_dim=300, C_W=2.0, C_b=0.5)
    module = net.torch_module(seed=0, dtype=torch.float64)
    linears = [m for m in module if isinstance(m, torch.nn.Linear)]
    assert [lin.weight.shape for lin in linears] == [(400, 300), (400, 400), (1, 400)]
    # 120000 weights: the sample variance of W·n_in/C_W is 1 ± 0.004 (std √(2/120000))
    w = linears[0].weight.detach()
    assert float(w.var() * 300 / 2.0) == pytest.approx(1.0, abs=0.02)
    assert float(linears[1].bias.detach().var() / 0.5) == pytest.approx(1.0, abs=0.3)  # 400 biases
    out = module(torch.ones(5, 300, dtype=torch.float64))
    assert out.shape == (5, 1)


def test_with_changes_fields_and_revalidates():
    net = pdlt.MLP("tanh", depth=3, width=8, input_dim=2)
    assert net.with_(depth=5).widths == (2, 8, 8, 8, 8, 1)
    with pytest.raises(ValueError):
        net.with_(C_W=-1.0)


def _shifted_tanh(z):
    return torch.tanh(z) + 0.1


def test_specs_pickle_and_deepcopy():
    import copy
    import pickle

    for act in ("relu", pdlt.activation("leaky_relu", slope=0.2), _shifted_tanh):
        net = pdlt.MLP(act, depth=3, width=8, input_dim=2, C_W=[1.0, 2.0, 3.0])
        back = pickle.loads(pickle.dumps(net))
        assert back.widths == net.widths and back.C_W == net.C_W
        assert back.activation.name == net.activation.name
        z = torch.linspace(-2, 2, 9, dtype=torch.float64)
        torch.testing.assert_close(back.activation.d1(z), net.activation.d1(z))
        assert copy.deepcopy(net).activation is net.activation
    x = np.random.default_rng(0).normal(size=(3, 2))
    net = pdlt.MLP("leaky_relu", depth=3, width=8, input_dim=2)
    np.testing.assert_array_equal(
        pdlt.kernel(pickle.loads(pickle.dumps(net)), x).K, pdlt.kernel(net, x).K
    )
