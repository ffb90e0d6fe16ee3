"""Report section "Architecture": renders for activations with and without criticality and
with and without ν(γ); the measured residual four-point vertex beside the theory (it must agree
for tanh and ReLU); the aspect-ratio experiment where the activation has a critical point."""

import pytest

from pdlt.report import ReportConfig, build_report

_PATH = ("pdlt.report.sections.architecture:architecture_section",)


@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid"])
def test_architecture_section(tmp_path, act):
    config = ReportConfig(activation=act, depth=4, widths=(16,), quick=True, out=tmp_path)
    result = build_report(config, sections=_PATH)
    html = result.path.read_text()
    critical = act != "sigmoid"
    assert html.count("<img") == (3 if critical else 2) and "r*" in html
    assert "pdlt.recommend" in html and "depth L" in html
    assert (act == "sigmoid") == ("no criticality" in html)
    assert (act == "relu") == ("B.29 (dashed)" in html)  # the book's ν(γ) beside the corrected one
    assert result.sections[0].seconds < 60  # budget ≤ 15 s; generous for a loaded CI machine
    summary = result.summary.set_index("check")
    assert len(summary) == (5 if critical else 4)
    vertex = summary[summary.index.str.startswith("residual V/K²")]
    assert len(vertex) == 2  # two widths
    if act in ("tanh", "relu"):  # the residual vertex (path recursion) must agree for any σ
        assert (vertex.status == "ok").all(), vertex
    assert "Aspect ratio on real networks" in html
    assert critical == ("test loss (mean ± standard error over networks)" in html)
    if not critical:
        assert "pdlt.aspect_ratio_experiment was not run" in html
