"""Report section "Architecture": renders for activations with and without criticality and
with and without ν(γ), within its time budget (theory only)."""

import pytest

from pdlt.report import ReportConfig, build_report

_PATH = ("pdlt.report.sections.architecture:architecture_section",)


@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid"])
def test_architecture_section(tmp_path, act):
    config = ReportConfig(activation=act, depth=4, widths=(16,), quick=True, out=tmp_path)
    result = build_report(config, sections=_PATH)
    html = result.path.read_text()
    assert html.count("<img") == 1 and "r*" in html
    assert "pdlt.recommend" in html and "depth L" in html
    assert (act == "sigmoid") == ("no criticality" in html)
    assert (act == "relu") == ("B.29 (dashed)" in html)
    assert result.sections[0].seconds < 30  # budget ≤ 5 s; generous for a loaded CI machine
    assert len(result.summary) == 2
