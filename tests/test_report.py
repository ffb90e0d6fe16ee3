"""`pdlt report`: the CLI writes one self-contained HTML page with every section."""

import re

from typer.testing import CliRunner

from pdlt.cli import app
from pdlt.report import SECTIONS, ReportConfig, build_report


def test_kernel_section_alone(tmp_path):
    config = ReportConfig(depth=4, widths=(16, 32), n_networks=100, quick=True, out=tmp_path)
    result = build_report(config, sections=("pdlt.report.sections.kernel:kernel_section",))
    html = result.path.read_text()
    assert html.count("<img") >= 1 and "data:image/png;base64," in html
    assert "Infinite-width kernel" in html
    assert set(result.summary.columns) == {"section", "check", "value", "status"}
    assert len(result.summary) == 2  # one row per width


def test_cli_report_quick_writes_every_section(tmp_path):
    out = tmp_path / "rep"
    res = CliRunner().invoke(
        app,
        ["report", "--quick", "--depth", "3", "--width", "16", "--width", "24", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    html = (out / "index.html").read_text()
    assert "report written to" in res.output
    # self-contained: no external scripts, stylesheets or images
    assert not re.search(r'(src|href)="(http|//)', html)
    assert html.count("<section") == len(SECTIONS)


def test_cli_rejects_bad_options(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["report", "--activation", "nope", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "unknown activation" in res.output
    res = runner.invoke(app, ["report", "--C-W", "-1", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "C_W must be > 0" in res.output
