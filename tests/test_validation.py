"""One set of boundary rules (issue 15, item 11): pdlt._validation and its use at the entries."""

import numpy as np
import pytest
import torch

import pdlt
from pdlt import _validation as v
from pdlt.experiment.train import train_ensemble

GOOD_REALS = [
    2,
    2.0,
    np.float32(2.0),
    np.float64(2.0),
    np.int64(2),
    np.array(2.0),
    torch.tensor(2.0),
]


@pytest.mark.parametrize("value", GOOD_REALS, ids=lambda x: type(x).__name__)
def test_real_accepts_numpy_scalars_and_0d_arrays(value):
    out = v.real("C_W", value)
    assert out == 2.0 and type(out) is float


@pytest.mark.parametrize(
    "value, error, match",
    [
        (True, TypeError, "real number, got bool"),
        (np.bool_(True), TypeError, "real number"),
        ("1", TypeError, "real number, got str"),
        (1 + 0j, TypeError, "real number, got complex"),
        (np.complex128(1), TypeError, "real number"),
        (None, TypeError, "real number"),
        ([1.0], TypeError, "real number"),
        (float("nan"), ValueError, "finite"),
        (np.float32("inf"), ValueError, "finite"),
        (np.array(float("nan")), ValueError, "finite"),
    ],
)
def test_real_rejects(value, error, match):
    with pytest.raises(error, match=match):
        v.real("x", value)


def test_bounds_ints_seeds_per_layer():
    assert v.positive("a", 1e-300) == 1e-300
    with pytest.raises(ValueError, match="a must be > 0"):
        v.positive("a", 0.0)
    assert v.non_negative("a", 0) == 0.0
    with pytest.raises(ValueError, match="≤ 1"):
        v.real("p", 1.5, max=1.0)
    assert v.integer("n", np.int32(3)) == 3 and v.integer("n", np.array(3)) == 3
    for bad in (True, 3.0, "3", np.float64(3)):
        with pytest.raises(TypeError, match="n must be an int"):
            v.integer("n", bad)
    with pytest.raises(ValueError, match="≥ 0"):
        v.seed("seed", -1)
    assert v.per_layer("C_W", np.array([1.0, 2.0]), 2) == (1.0, 2.0)
    assert v.per_layer("C_W", np.array(2.0), 3) == (2.0, 2.0, 2.0)
    assert v.per_layer("C_W", np.float32(0.5), 2) == (0.5, 0.5)
    with pytest.raises(ValueError, match=r"C_W\[1\] must be finite"):
        v.per_layer("C_W", [1.0, float("nan")], 2)
    with pytest.raises(TypeError, match="C_W must be a float or a sequence"):
        v.per_layer("C_W", "12", 2)


@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.ones((2, 3)) + 1j, TypeError, "complex"),
        (torch.ones(2, 3, dtype=torch.complex64), TypeError, "complex"),
        (np.ones((2, 3), dtype=bool), TypeError, "bool"),
        (torch.ones(2, 3, dtype=torch.bool), TypeError, "bool"),
        ([["1", "2", "3"]], TypeError, "string"),
        (np.array([[1, 2, None]], dtype=object), TypeError, "object"),
        (np.full((1, 3), np.nan), ValueError, "NaN or inf"),
        (np.ones((2, 2)), ValueError, "shape"),
        (np.ones((0, 3)), ValueError, "at least one"),
        ("abc", TypeError, "numpy array or torch tensor"),
    ],
)
def test_inputs_rejected_at_every_entry(x, error, match):
    net = pdlt.MLP("tanh", 2, 4, 3)
    with pytest.raises(error, match=match):
        v.as_inputs(3, x)
    with pytest.raises(error, match=match):
        pdlt.kernel(net, x)
    with pytest.raises(error, match=match):
        pdlt.measure(net, x, 2)
    with pytest.raises(error, match=match):
        pdlt.empirical_ntk(net, x)


def test_inputs_accepted():
    for x in ([[1, 2, 3]], np.ones((2, 3), dtype=np.float32), torch.ones(2, 3, dtype=torch.int64)):
        t = v.as_inputs(3, x)
        assert t.dtype == torch.float64 and t.shape[1] == 3
    assert v.as_inputs(1, [1.0, 2.0]).shape == (2, 1)


def test_mlp_fields_accept_numpy_scalars_and_0d_arrays():
    net = pdlt.MLP("tanh", np.int64(3), np.int32(4), 2, C_W=np.array(2.0), C_b=np.float32(0.5))
    assert net.C_W == (2.0, 2.0, 2.0) and net.C_b == (0.5, 0.5, 0.5) and net.depth == 3
    with pytest.raises(TypeError, match="C_W must be a real number, got complex"):
        pdlt.MLP("tanh", 2, 4, 2, C_W=1 + 1j)
    with pytest.raises(TypeError, match="C_b must be a real number, got bool"):
        pdlt.MLP("tanh", 2, 4, 2, C_b=True)
    with pytest.raises(TypeError, match="must be a float or a sequence"):
        pdlt.MLP("tanh", 2, 4, 2, C_W="1")


def test_activation_parameters_and_callables():
    with pytest.raises(ValueError, match="slope must be finite"):
        pdlt.activation("leaky_relu", slope=float("nan"))
    with pytest.raises(ValueError, match="alpha must be finite"):
        pdlt.activation("elu", alpha=float("inf"))
    assert pdlt.activation("leaky_relu", slope=np.float32(0.25)).params["slope"] == 0.25
    with pytest.raises(TypeError, match="floating-point"):
        pdlt.activation(lambda z: (z > 0).long())
    with pytest.raises(TypeError, match="elementwise.*permuted"):
        pdlt.activation(lambda z: torch.cumsum(z, 0))
    with pytest.raises(TypeError, match="elementwise"):
        pdlt.activation(lambda z: z.sort().values)
    with pytest.raises(TypeError, match="elementwise.*part of the input"):
        pdlt.activation(lambda z: z - z.mean())
    # elementwise functions pass, kinked ones included
    pdlt.activation(lambda z: torch.where(z > 0, z, 0.1 * z))


def test_experiment_entries():
    net = pdlt.MLP("tanh", 2, 4, 1)
    x = np.ones((2, 1))
    with pytest.raises(TypeError, match="seed must be an int"):
        pdlt.measure(net, x, 4, seed=1.0)
    with pytest.raises(ValueError, match="seed must be ≥ 0"):
        pdlt.measure(net, x, 4, seed=-1)
    with pytest.raises(TypeError, match="n_networks must be an int"):
        pdlt.empirical_ntk(net, x, n_networks=True)
    ms = pdlt.measure(net, x, np.int64(4), seed=np.int32(1))
    assert ms.n_networks == 4 and ms.seed == 1
    y = np.zeros((2, 1))
    with pytest.raises(ValueError, match="learning_rate must be finite"):
        train_ensemble(net, x, y, n_networks=2, steps=1, learning_rate=float("nan"))
    with pytest.raises(TypeError, match="steps must be an int"):
        train_ensemble(net, x, y, n_networks=2, steps=1.5, learning_rate=0.1)
    ens = train_ensemble(net, x, y, n_networks=2, steps=1, learning_rate=np.float32(0.1))
    assert ens is not None


def test_init_accepts_float32():
    module = pdlt.MLP("tanh", 2, 4, 2).torch_module(seed=0)
    pdlt.init.critical_(module, C_W=np.float32(1.0), C_b=np.float64(0.0))
    with pytest.raises(TypeError, match="C_W must be a real number"):
        pdlt.init.critical_(module, C_W="1")
