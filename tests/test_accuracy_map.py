"""pdlt.accuracy_map: the NNGP accuracy map over (C_W, C_b) at several depths (issue 17).

Cross-route tests: the grid's exact route against per-point :class:`pdlt.NNGPRegressor`
(the same kernel recursion, one network at a time) to round-off; the cosine-table route against
the exact route to its reported interpolation error. Physics tests: at the deepest depth good
accuracy begins at the order–chaos line (ReLU: the semi-critical C_W = 2; tanh: χ_⊥ = 1) and
collapses deep in the ordered phase.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pdlt
from pdlt.activations import activation
from pdlt.experiment.accuracy_map import (
    _build_tables,
    _exact_kernels,
    digits_split,
    one_hot_targets,
    paper_split,
)


@pytest.fixture(scope="module")
def small():
    return digits_split(120, 100, seed=1)


@pytest.fixture(scope="module")
def medium():
    return digits_split(300, 200, seed=0)


def _data(d):
    XA, yA, XB, yB = d
    return {"X": XA, "y": yA, "X_test": XB, "y_test": yB}


# --------------------------------------------------------------------------------------------
# cross-route


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_exact_route_equals_per_point_nngp_regressor(small, act):
    """Every grid point's accuracy equals that of pdlt.NNGPRegressor on the same network, and
    the grid's kernels equal pdlt.kernel's to round-off."""
    XA, yA, XB, yB = small
    XA, XB = XA[:60], XB[:50]
    yA, yB = yA[:60], yB[:50]
    cw, cb, depths = np.array([0.8, 2.0, 3.0]), np.array([0.0, 0.5]), (2, 6)
    noise = 1e-6
    am = pdlt.accuracy_map(
        act, cw, cb, depths, XA, yA, XB, yB, route="exact", noise=noise, standardize=False
    )
    assert am.info["route"] == "exact"
    Y = one_hot_targets(yA, 10)
    x = torch.as_tensor(np.concatenate([XA, XB]))
    for d, L in enumerate(depths):
        for i, b in enumerate(cb):
            for j, w in enumerate(cw):
                net = pdlt.MLP(act, depth=L, width=1, input_dim=64, C_W=w, C_b=b)
                K = pdlt.kernel(net, x).K[-1]
                Kg = _exact_kernels(activation(act), torch.tensor([w]), torch.tensor([b]), x, (L,))[
                    L
                ][0].numpy()
                np.testing.assert_allclose(Kg, K, rtol=1e-12, atol=1e-14 * np.abs(K).max())
                qbar = float(np.mean(np.diag(K)[:60]))
                gp = pdlt.NNGPRegressor(net, noise=noise * qbar).fit(XA, Y)
                acc = np.mean(gp.predict(XB).argmax(1) == yB)
                if not am.degenerate[d, i, j]:
                    assert am.accuracy[d, i, j] == acc, (L, b, w)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_table_route_equals_exact_route(small, act):
    """The cosine-table kernels equal the exact N² recursion within the reported error, and the
    two routes give the same map."""
    XA, _, XB, _ = small
    XA, XB = XA[:40], XB[:30]
    x = torch.as_tensor(np.concatenate([XA, XB]))
    NA, NB = XA.shape[0], XB.shape[0]
    cw = torch.tensor([0.7, 1.5, 2.0, 3.5], dtype=torch.float64)
    cb = torch.tensor([0.0, 0.3, 1.0, 2.0], dtype=torch.float64)
    depths = (3, 12, 30)
    tables, Wm, s_nodes = _build_tables(activation(act), cw, cb, x, NA, depths, 1.0)
    exact = _exact_kernels(activation(act), cw, cb, x, depths)
    from pdlt.experiment.accuracy_map import _table_error

    for L in depths:
        q, T, D, prop = tables[L]
        # both routes carry the propagated error of their own expectations: allow it twice.
        # pdlt.gaussian.pair_expectation (the exact route for tanh) was measured 1e-9
        # relative off near ρ → 1 at K ≈ 4 (against a 2000² product rule, which the table
        # matches to 1e-13): allow that per layer for tanh.
        err = _table_error(T, D, s_nodes, q) + 2 * float(prop.max())
        err += 2e-9 * L if act == "tanh" else 0.0
        assert err < 1e-7, err  # the table is accurate, not merely self-consistent
        K = (Wm @ torch.cat([T, D], 1).T).T  # (G, P)
        K_BA = K[:, NA * NA :].reshape(-1, NB, NA)
        low = torch.tril_indices(NA, NA, offset=-1)
        K_AA = K[:, : NA * NA].reshape(-1, NA, NA)[:, low[0], low[1]]
        E = exact[L]
        scale = q[:, None, None]
        assert torch.all((K_BA - E[:, NA:, :NA]).abs() <= (err + 1e-13) * scale)
        assert torch.all((K_AA - E[:, low[0], low[1]]).abs() <= (err + 1e-13) * scale[:, :, 0])
        # ~1e-13 per layer from each route's quadrature, over up to 30 layers
        np.testing.assert_allclose(q, torch.diagonal(E, dim1=1, dim2=2)[:, 0], rtol=5e-12)


def test_routes_give_the_same_map(small):
    d = _data(small)
    kw = dict(C_W=np.array([0.75, 1.5, 2.0, 3.0]), C_b=np.array([0.0, 0.5]), depths=(4, 25))
    a = pdlt.accuracy_map("tanh", **kw, **d, route="table")
    b = pdlt.accuracy_map("tanh", **kw, **d, route="exact")
    np.testing.assert_array_equal(a.accuracy, b.accuracy)
    np.testing.assert_array_equal(a.degenerate, b.degenerate)
    assert a.info["route"] == "table" and b.info["route"] == "exact"


# --------------------------------------------------------------------------------------------
# physics


def _edge(row: np.ndarray, cw: np.ndarray, slack: float = 0.03) -> float:
    """The smallest C_W whose accuracy is within ``slack`` of the row's best."""
    return float(cw[np.flatnonzero(row >= row.max() - slack)[0]])


def test_relu_good_accuracy_starts_at_the_semi_critical_line(medium):
    cw = np.linspace(0.5, 4.0, 15)
    cb = np.array([0.5, 1.0, 2.0])
    am = pdlt.accuracy_map("relu", cw, cb, (5, 40), **_data(medium))
    assert am.semi_critical and np.allclose(am.critical_C_W, 2.0)
    deep = am.accuracy[-1]
    for i in range(cb.size):
        # the ordered side has collapsed to the constant predictor ...
        assert np.all(deep[i, cw <= 1.0] <= am.chance + 0.05), deep[i]
        # ... good accuracy begins at the semi-critical line C_W = 2 (grid step 0.25)
        assert 1.5 <= _edge(deep[i], cw) <= 2.25, (cb[i], deep[i])
        assert deep[i, np.argmin(np.abs(cw - 2.0))] >= deep[i].max() - 0.03
    assert am.degenerate[-1, :, cw <= 1.0].all()  # and is flagged degenerate there
    assert np.all(am.accuracy[0] > 0.9)  # at depth 5 every point still learns


def test_tanh_good_accuracy_narrows_onto_chi_perp_one(medium):
    """At depth 100 only a band around χ_⊥ = 1 still learns: the best C_W lies within 0.6 of
    the line (measured: 0.3–0.45 on its ordered side, a finite-depth offset), and both deep
    phases have collapsed to the constant predictor."""
    cw = np.linspace(0.5, 4.5, 17)
    cb = np.array([0.4, 0.8])
    am = pdlt.accuracy_map("tanh", cw, cb, (5, 100), **_data(medium))
    assert not am.semi_critical
    deep = am.accuracy[-1]
    for i in range(cb.size):
        crit = am.critical_C_W[i]  # χ_⊥ = 1: 2.69 at C_b = 0.4, 3.23 at C_b = 0.8
        best = cw[np.argmax(deep[i])]
        assert abs(best - crit) <= 0.6, (cb[i], crit, deep[i])
        assert np.all(deep[i, cw <= crit - 1.0] <= am.chance + 0.05)  # deep ordered
        assert np.all(deep[i, cw >= crit + 1.25] <= am.chance + 0.1)  # deep chaotic
        assert deep[i].max() > 0.9
    assert np.all(am.accuracy[0] > 0.85)  # at depth 5 every point still learns
    assert np.all(np.isfinite(am.accuracy))


def test_tanh_table_against_brute_force_quadrature(small):
    """One test–train pair through 30 layers at a chaotic point, against a 1500² product
    Gauss–Legendre rule per layer (an independent route)."""
    import math

    XA, _, XB, _ = small
    x = torch.as_tensor(np.concatenate([XA[:20], XB[:5]]))
    cw, cb = 3.5, 2.0
    tables, Wm, _ = _build_tables(
        activation("tanh"), torch.tensor([cw]), torch.tensor([cb]), x, 20, (30,), 1.0
    )
    q, T, D, _ = tables[30]
    K = (Wm @ torch.cat([T, D], 1).T)[:, 0]
    got = float(K[20 * 20])  # K_BA[0, 0]: test input 0 against training input 0
    xg, wg = np.polynomial.legendre.leggauss(1500)
    u = 12 * xg
    wu = 12 * wg * np.exp(-u * u / 2) / math.sqrt(2 * math.pi)
    qq, kk = cb + cw, cb + cw * float(x[20] @ x[0]) / 64
    for _ in range(29):
        s, rho = math.sqrt(qq), kk / qq
        r = math.sqrt(max(0.0, 1 - rho * rho))
        inner = (np.tanh(s * (rho * u[:, None] + r * u[None, :])) * wu).sum(1)
        kk = cb + cw * float((np.tanh(s * u) * wu * inner).sum())
        qq = cb + cw * float((np.tanh(s * u) ** 2 * wu).sum())
    assert abs(got - kk) <= 1e-10 * qq, (got, kk)
    assert abs(float(q[0]) - qq) <= 1e-12 * qq


def test_degenerate_points_get_the_limit_accuracy(small):
    am = pdlt.accuracy_map("relu", [0.5, 2.0], [1.0], (60,), **_data(small))
    assert am.degenerate[0, 0, 0] and not am.degenerate[0, 0, 1]
    assert am.accuracy[0, 0, 0] == am.chance
    assert am.spread[0, 0, 0] < am.info["degenerate_tol"] <= am.spread[0, 0, 1]
    XA, yA, _, yB = small
    counts = np.bincount(yA, minlength=10)
    assert am.chance == np.mean(yB == np.argmax(counts))


# --------------------------------------------------------------------------------------------
# result object, data, trained route


def test_result_frame_and_plot(small):
    import matplotlib

    matplotlib.use("Agg")
    am = pdlt.accuracy_map("relu", [1.0, 2.0, 3.0], [0.0, 0.5], (3, 10), **_data(small))
    assert am.accuracy.shape == (2, 2, 3)
    df = am.to_frame()
    assert len(df) == 12 and set(df.columns) >= {"depth", "C_b", "C_W", "accuracy", "degenerate"}
    assert (
        df.loc[(df.depth == 10) & (df.C_b == 0.5) & (df.C_W == 3.0), "accuracy"].item()
        == (am.accuracy[1, 1, 2])
    )
    fig = am.plot()
    assert len(fig.axes) >= 2
    assert "semi-critical" in fig.axes[0].get_legend().get_texts()[0].get_text()
    assert "AccuracyMap('relu'" in repr(am)


def test_paper_split_preprocessing():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 7)) * 3 + 1
    y = np.repeat(np.arange(3), 100)[rng.permutation(300)]
    XA, yA, XB, yB = paper_split(X, y, per_class=20)
    assert XA.shape == (60, 7) and np.all(np.bincount(yA) == 20)
    np.testing.assert_allclose(XA.mean(1), 0, atol=1e-12)
    np.testing.assert_allclose((XA**2).mean(1), 1, rtol=1e-12)
    assert XB.shape == (240, 7)
    first = np.flatnonzero(y == 0)[:20]
    np.testing.assert_allclose(
        XA[yA == 0][0], (X[first[0]] - X[first[0]].mean()) / X[first[0]].std()
    )


def test_trained_route_runs_and_resumes(small, tmp_path):
    XA, yA, XB, yB = small
    kw = dict(
        C_W=[1.0, 2.0],
        C_b=[0.1],
        depths=(3,),
        X=XA[:60],
        y=yA[:60],
        X_test=XB[:40],
        y_test=yB[:40],
        method="trained",
        width=16,
        steps=20,
        n_networks=2,
        store=tmp_path,
    )
    a = pdlt.accuracy_map("relu", **kw)
    assert a.method == "trained" and a.accuracy.shape == (1, 1, 2) and a.info["computed"] == 2
    assert np.all((a.accuracy >= 0) & (a.accuracy <= 1))
    b = pdlt.accuracy_map("relu", **kw)
    assert b.info["cached"] == 2 and b.info["computed"] == 0
    np.testing.assert_array_equal(a.accuracy, b.accuracy)


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "sgd"}, "method must be one of"),
        ({"route": "fast"}, "route must be one of"),
        ({"C_W": [-1.0, 2.0]}, "C_W values must be finite and > 0"),
        ({"C_b": [0.5, 0.1]}, "C_b must be strictly increasing"),
        ({"depths": (10, 5)}, "depths must be strictly increasing"),
        ({"depths": (0,)}, "depths must be ints ≥ 1"),
        ({"noise": 0.0}, "noise must be a positive float"),
        ({"X_test": np.ones((5, 3))}, "features"),
        ({"y": np.full(50, -1)}, "non-negative integer"),
        ({"y_test": None}, "give all of X, y, X_test, y_test"),
    ],
)
def test_bad_input_errors(small, kwargs, match):
    XA, yA, XB, yB = small
    args = dict(
        C_W=[1.0, 2.0], C_b=[0.0], depths=(3,), X=XA[:50], y=yA[:50], X_test=XB[:20], y_test=yB[:20]
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        pdlt.accuracy_map("relu", **args)


def test_trained_keywords_need_the_trained_method(small):
    XA, yA, XB, yB = small
    with pytest.raises(TypeError, match="unexpected keyword"):
        pdlt.accuracy_map("relu", [2.0], [0.1], (3,), XA, yA, XB, yB, width=8)


def test_table_route_needs_one_norm(small):
    XA, yA, XB, yB = small
    X2 = XA[:30] * np.linspace(1, 2, 30)[:, None]
    with pytest.raises(ValueError, match="one norm"):
        pdlt.accuracy_map(
            "relu",
            [2.0],
            [0.1],
            (3,),
            X2,
            yA[:30],
            XB[:10],
            yB[:10],
            standardize=False,
            route="table",
        )
    am = pdlt.accuracy_map(
        "relu", [2.0], [0.1], (3,), X2, yA[:30], XB[:10], yB[:10], standardize=False
    )
    assert am.info["route"] == "exact"


def test_cli_and_report_section(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from typer.testing import CliRunner

    from pdlt.cli import app
    from pdlt.report import ReportConfig
    from pdlt.report.sections.accuracy_map import accuracy_map_section

    out = tmp_path / "am.png"
    res = CliRunner().invoke(
        app,
        ["accuracy-map", "relu", "--C-W-num", "4", "--C-b-num", "2", "--depth", "3",
         "--n-test", "50", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert out.exists() and out.with_suffix(".csv").exists()
    res = CliRunner().invoke(app, ["accuracy-map", "relu", "--method", "sgd", "--out", str(out)])
    assert res.exit_code != 0 and "nngp or trained" in res.output
    sec = accuracy_map_section(ReportConfig(activation="tanh", quick=True))
    assert sec.body.count("<img") == 2 and "semi-critical" in sec.body
    assert {r["status"] for r in sec.summary} <= {"ok", "check"} and len(sec.summary) == 2
