"""Benchmark: the aspect-ratio experiment at its defaults (6,000 parameters, six shapes from
L/n = 0.025 to 1, 4 networks each, 500 full-batch steps on 256 digits), as the report runs it,
and the report's Architecture section, for tanh and ReLU. Target: ≤ 15 s for the experiment on
an idle machine (the report's time budget).

Run: OMP_NUM_THREADS=1 python benchmarks/bench_aspect_ratio.py
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

import pdlt
from pdlt.report import ReportConfig
from pdlt.report.sections.architecture import architecture_section


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for act in ("tanh", "relu"):
        t0 = time.perf_counter()
        res = pdlt.aspect_ratio_experiment(act, progress=False)
        t_exp = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            architecture_section(ReportConfig(activation=act, out=Path(tmp)))
            t_sec = time.perf_counter() - t0
        rows.append(
            {
                "activation": act,
                "experiment_seconds": round(t_exp, 2),
                "architecture_section_seconds": round(t_sec, 2),
                "shapes": len(res.depths),
                "networks": int(res.test_loss.size),
                "r_star": res.r_star,
                "best_ratio": round(res.best_ratio, 4),
            }
        )
        print(json.dumps(rows[-1]))
    out = Path(__file__).parent / "results" / "aspect_ratio.json"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    out.write_text(
        json.dumps({"machine": platform.processor(), "load_1min": load, "rows": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
