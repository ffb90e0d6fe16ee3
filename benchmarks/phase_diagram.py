"""Time the trainability phase diagram on this machine: the default grid of ``pdlt phase-diagram``
(one sweep cell per depth, all C_W of the row in one batched program), the coarse grid that
``pdlt report`` trains, and one depth's row batched against the same row cell by cell (the
route before issue 11: one program per (C_W, depth)).

Prints a table and writes benchmarks/results/phase_diagram.json. The load average is recorded
because on a shared machine it dominates the wall time; ``cpu_seconds_per_worker`` (process
time of all cells / workers) is the wall time the grid needs on idle cores.

    python benchmarks/phase_diagram.py [--workers 2] [--store DIR] [--device cpu|cuda] [--skip-full]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    import torch

    from pdlt.experiment.trainability import (
        DEFAULT_C_W,
        DEFAULT_DEPTHS,
        DEFAULT_SETTINGS,
        trainability,
        trainability_cell,
        trainability_row,
    )
    from pdlt.report.sections.learning import REPORT_C_W, REPORT_DEPTHS, REPORT_SETTINGS

    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-full", action="store_true", help="only the report grid and one row")
    args = ap.parse_args()
    torch.set_num_threads(1)
    row: dict = {
        "device": args.device,
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg()[0],
    }

    # one depth's row: batched vs cell by cell (same networks, same results)
    s = dict(DEFAULT_SETTINGS)
    depth = 16
    batched, _, cpu_b = _timed(
        lambda: trainability_row(depth, C_W=list(DEFAULT_C_W), seed=0, device=args.device, **s)
    )
    if args.device == "cpu":
        cells, _, cpu_c = _timed(
            lambda: [trainability_cell(c, depth, seed=0, **s)["accuracy"] for c in DEFAULT_C_W]
        )
        row["row_depth16_cell_by_cell_cpu_seconds"] = round(cpu_c, 2)
        row["row_depth16_max_accuracy_difference"] = float(
            np.max(np.abs(np.array(batched["accuracy"]) - np.array(cells)))
        )
    row["row_depth16_batched_cpu_seconds"] = round(cpu_b, 2)

    # the coarse grid of `pdlt report` (one process, as in the report)
    rep, wall, cpu = _timed(
        lambda: trainability(
            REPORT_C_W, REPORT_DEPTHS, store=None, progress=False, device=args.device,
            **REPORT_SETTINGS,
        )
    )  # fmt: skip
    row.update(
        report_grid=f"{len(REPORT_C_W)} C_W x {len(REPORT_DEPTHS)} depths {REPORT_SETTINGS}",
        report_grid_seconds=round(wall, 1),
        report_grid_cpu_seconds=round(cpu, 1),
        report_grid_agreement_with_6_xi=round(rep.agreement(), 3),
    )

    if not args.skip_full:
        store = args.store or Path(tempfile.mkdtemp(prefix="pdlt-pd-bench-"))
        t0 = time.perf_counter()
        res = trainability(
            store=store, scheduler="processes", n_workers=args.workers, progress=False,
            device=args.device,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        row.update(
            full_grid=f"{len(DEFAULT_C_W)} C_W x {len(DEFAULT_DEPTHS)} depths",
            sweep_cells=len(DEFAULT_DEPTHS),
            workers=args.workers,
            full_grid_seconds=round(seconds, 1),
            full_grid_cpu_seconds_per_worker=round(
                float(res.cells["cpu_seconds"].sum()) / args.workers, 1
            ),
            full_grid_agreement_with_6_xi=round(res.agreement(), 3),
            critical_C_W=res.theory["critical_C_W"],
            max_accuracy=float(np.nanmax(res.accuracy)),
        )
    row["load_average_after"] = os.getloadavg()[0]
    for k, v in row.items():
        print(f"{k:>40}  {v}")
    out = (
        Path(__file__).parent
        / "results"
        / f"phase_diagram{'' if args.device == 'cpu' else '_' + args.device}.json"
    )
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(row, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
