"""The report's NTK section runs, checks what it claims, and is listed in SECTIONS."""

from __future__ import annotations

from pdlt.report import SECTIONS, ReportConfig
from pdlt.report.sections.ntk import ntk_section


def test_ntk_section_quick(tmp_path):
    assert "pdlt.report.sections.ntk:ntk_section" in SECTIONS
    config = ReportConfig(activation="relu", depth=3, widths=(8, 16), n_networks=60, quick=True)
    sec = ntk_section(config)
    assert sec.id == "ntk" and "<img" in sec.body and "learning-rate" in sec.body
    checks = {row["check"]: row for row in sec.summary}
    assert any(c.startswith("Θ vs 60 networks, n=8") for c in checks)
    crit = checks["NTK criticality (gradients)"]  # ReLU at C_W = 2
    assert crit["value"].startswith("critical") and crit["status"] == "ok"
    assert all(row["status"] in ("ok", "CHECK") for row in sec.summary)


def test_cli_ntk():
    from typer.testing import CliRunner

    from pdlt.cli import app

    res = CliRunner().invoke(app, ["ntk", "relu", "--depth", "6"])
    assert res.exit_code == 0, res.output
    assert "critical" in res.output and "scale-invariant" in res.output
    res = CliRunner().invoke(app, ["ntk", "tanh", "--C-W", "0.5", "--depth", "4"])
    assert res.exit_code == 0 and "vanishing" in res.output and "numerical" in res.output
    res = CliRunner().invoke(app, ["ntk", "tanh", "--C-W", "-1"])
    assert res.exit_code == 2 and "C_W must be > 0" in res.output
