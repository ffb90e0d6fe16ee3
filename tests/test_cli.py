"""The ``pdlt`` command: bad input is one line ``Error: …`` with exit code 2 (never a
traceback), found by the library before any work; good input prints the library's numbers."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from pdlt.cli import app


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(
    "args, message",
    [
        # NaN and inf in every kind of float option
        (("criticality", "tanh", "--C-W", "nan"), "C_W must be finite"),
        (("criticality", "tanh", "--C-b", "inf", "--C-W", "1"), "C_b must be finite"),
        (("report", "--C-b", "inf"), "C_b must be finite"),
        (("report", "--C-W", "nan"), "C_W must be finite"),
        (("phase-diagram", "--C-b", "nan"), "C_b must be finite"),
        (("phase-diagram", "--C-W-min", "nan"), "--C-W-min"),
        (("ntk", "tanh", "--C-b", "nan"), "C_b must be finite"),
        (("finite-width", "tanh", "--C-W", "inf"), "C_W must be finite"),
        (("finite-width", "tanh", "--K1", "nan"), "K_first must be finite"),
        # out of range
        (("report", "--depth", "1"), "depth must be ≥ 2"),
        (("report", "--width", "0"), "widths must be ≥ 1"),
        (("report", "--n-networks", "1"), "n_networks must be ≥ 2"),
        (("phase-diagram", "--depth", "1"), "depth must be integers ≥ 2"),
        (("phase-diagram", "--networks", "1"), "n_networks must be ≥ 2"),
        (("ntk", "tanh", "--depth", "0"), "depth must be ≥ 1"),
        (("ntk", "tanh", "--C-W", "-1"), "C_W must be > 0"),
        (("finite-width", "tanh", "--K1", "0"), "--K-first must be > C_b"),
        # unknown names
        (("criticality", "nope"), "unknown activation 'nope'"),
        (("report", "--activation", "nope"), "unknown activation 'nope'"),
        (("phase-diagram", "--scheduler", "foo", "--C-W-num", "1", "--depth", "3"), "scheduler"),
    ],
)
def test_bad_input_is_one_line_error(args, message, tmp_path):
    if args[0] == "report":  # nothing may be written, wherever it fails
        args = (*args, "--out", str(tmp_path / "r"))
    if args[0] == "phase-diagram":
        args = (*args, "--out", str(tmp_path / "pd.png"), "--store", str(tmp_path / "store"))
        if "--scheduler" not in args:
            args = (*args, "--scheduler", "serial")
    res = _run(*args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], res.output
    assert "Traceback" not in res.output


def test_report_out_under_a_file_fails_before_any_section(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    import pdlt.report

    def no_section(path):  # a section that runs would fail this test
        raise AssertionError(f"section {path} ran")

    monkeypatch.setattr(pdlt.report, "_load", no_section)
    res = _run("report", "--quick", "--out", str(blocker / "sub"))
    assert res.exit_code == 2 and "a-file is a file" in res.output


def test_finite_width_prints_the_library_numbers():
    import math

    import pdlt

    res = _run("finite-width", "tanh", "--depth", "3", "--width", "50")
    assert res.exit_code == 0, res.output
    net = pdlt.MLP("tanh", depth=3, width=50, input_dim=1)  # critical tanh: C_b = 0, C_W = 1
    fpv = pdlt.four_point_vertex(net, [[1.0]])
    assert f"{fpv.normalized[-1, 0]:.6g}" in res.output  # V/K² at ℓ = 3: 1.21282
    assert f"{fpv.excess_kurtosis[-1, 0]:.6g}" in res.output
    assert "1.21282" in res.output and math.isclose(fpv.normalized[-1, 0], 1.212823, rel_tol=1e-5)


def test_finite_width_gelu_uses_the_critical_setting():
    """GELU's critical point has C_b = 0.1729 (5.105): the command (like the report) uses it, so
    the kernel stays near K^(1) instead of decaying as it does at C_b = 0."""
    import pdlt

    res = _run("finite-width", "gelu", "--depth", "4")
    assert res.exit_code == 0, res.output
    cp = pdlt.critical_point("gelu")
    assert f"C_b = {cp.C_b:g}" in res.output and f"C_W = {cp.C_W:g}" in res.output


def test_ntk_prints_the_learning_rate_scan():
    res = _run("ntk", "relu", "--depth", "6")
    assert res.exit_code == 0, res.output
    # scale-invariant class (9.94): Θ^(L) = 2L at λ = 1 with |x|²/n_0 = 1, and 2 when scaled
    assert "scale-invariant class, book rule" in res.output
    assert re.search(r"│ 100 +│ 200 +│ 2 +│ 0\.01 ", res.output), res.output


def test_dntk_prints_the_book_ratios():
    """``pdlt dntk``: per layer P/(nΘ²), Q/(nΘ²), Θ1/(nΘ) and R, S, T, U · K/(nΘ³) of the
    library for one input with |x|²/n_0 = 1 (02-ntk.md §8.2: tanh, ℓ = 10, n = 100)."""
    res = _run("dntk", "tanh")
    assert res.exit_code == 0, res.output
    for text in ["-0.00389287", "-0.00278888", "-0.00293825", "0.00075036", "0.000679701"]:
        assert text in res.output, res.output
    assert "0.00014517" in res.output
    res = _run("dntk", "relu", "--depth", "3", "--width", "50")
    assert res.exit_code == 0, res.output
    # ReLU (C_W = 2): Q = 16, S = 24, T = 12 at ℓ = 3 with Θ = 6, K = 2 (02-ntk.md §8.1)
    assert re.search(r"│ 3 +│ 0 +│ 0\.00888889 +│ 0 +│", res.output), res.output
    assert re.search(r"│ 3 +│ 0 +│ 0\.00444444 +│ 0\.00222222 +│ 0 +│", res.output), res.output
    res = _run("dntk", "tanh", "--C-W", "nan")
    assert res.exit_code == 2 and "C_W must be finite" in res.output
