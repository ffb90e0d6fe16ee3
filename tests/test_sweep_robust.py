"""Sweeps that lose nothing (issue 15, items 7 and 8): failing cells are stored as failed and do
not discard the others; interrupts stop the workers at once; the store verifies what it reads."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pdlt.experiment.sweep import FileStore, SweepError, sweep

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import _sweep_cells as cells  # noqa: E402

XS = [1, 2, 3, 4]


def _stored(store: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (store / "cells").glob("*.json")}


@pytest.mark.parametrize("scheduler", ["serial", "processes"])
def test_failing_cell_is_stored_and_the_others_survive(tmp_path, scheduler):
    kw = {"n_workers": 2} if scheduler == "processes" else {}
    with pytest.raises(SweepError, match="1 of 4 sweep cells failed") as info:
        sweep(cells.fails_on, {"x": XS, "bad": [2]}, store=tmp_path, scheduler=scheduler, **kw)
    err = info.value
    assert "ZeroDivisionError: cell x=2 fails on purpose" in str(err)
    assert "Traceback" in str(err) and "fails_on" in str(err)
    assert [r["y"] if r else None for r in err.result.results] == [1, None, 9, 16]
    records = _stored(tmp_path)
    assert len(records) == 4
    status = {r["params"]["x"]: r["status"] for r in records.values()}
    assert status == {1: "ok", 2: "failed", 3: "ok", 4: "ok"}
    failed = next(r for r in records.values() if r["status"] == "failed")
    assert "ZeroDivisionError" in failed["error"] and "fails on purpose" in failed["traceback"]
    assert all(r["key"] == k for k, r in records.items())
    # the next run reuses the three results and retries only the failed cell
    with pytest.raises(SweepError) as again:
        sweep(cells.fails_on, {"x": XS, "bad": [2]}, store=tmp_path)
    assert (again.value.result.cached, again.value.result.computed) == (3, 1)


def test_errors_keep_returns_the_failures():
    res = sweep(cells.fails_on, {"x": XS, "bad": [3]}, errors="keep")
    assert [r["y"] if r else None for r in res.results] == [1, 4, None, 16]
    ((cell, error, trace),) = res.failures.values()
    assert cell.params["x"] == 3 and error.startswith("ZeroDivisionError")
    frame = res.to_frame()
    assert frame.error.notna().tolist() == [False, False, True, False]


def test_failing_cell_on_dask(tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as client:
        with pytest.raises(SweepError, match="fails on purpose"):
            sweep(cells.fails_on, {"x": XS, "bad": [4]}, store=tmp_path, scheduler=client)
    status = sorted(r["status"] for r in _stored(tmp_path).values())
    assert status == ["failed", "ok", "ok", "ok"]


def test_cell_copied_from_another_cell_is_not_returned(tmp_path):
    res = sweep(cells.square, {"x": [2, 3]}, store=tmp_path)
    fs = FileStore(tmp_path)
    a, b = (fs.path(c.key) for c in res.cells)
    b.write_text(a.read_text())  # cell x=3 now holds x=2's record
    with pytest.warns(RuntimeWarning, match="not this cell's"):
        again = sweep(cells.square, {"x": [2, 3]}, store=tmp_path)
    assert (again.cached, again.computed) == (1, 1)
    assert again.to_frame().y.tolist() == [4, 9]


@pytest.mark.parametrize(
    "content, problem",
    [
        ({"result": {}}, "not this cell's"),
        ([1, 2], "not a record"),
        ("same identity, empty result", "without a result"),
        ("same identity, unknown status", "unknown status"),
    ],
)
def test_records_without_a_valid_result_are_recomputed(tmp_path, content, problem):
    res = sweep(cells.square, {"x": [5]}, store=tmp_path)
    cell = res.cells[0]
    if isinstance(content, str):
        record = {**cell.identity(), "status": "ok", "result": {}}
        if "status" in content:
            record = {**cell.identity(), "status": "weird", "result": {"y": 1}}
        content = record
    FileStore(tmp_path).path(cell.key).write_text(json.dumps(content))
    with pytest.warns(RuntimeWarning, match=problem):
        again = sweep(cells.square, {"x": [5]}, store=tmp_path)
    assert again.computed == 1 and again.to_frame().y.tolist() == [25]


# -- interrupts ---------------------------------------------------------------------------------

N_CELLS, SLEEP = 12, 0.6


def _alive(pid: int) -> bool:
    """Running (zombies, which no reaper may have collected yet, count as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] not in ("Z", "X")


def _run_and_signal(tmp_path: Path, sig: int) -> tuple[subprocess.Popen, Path, Path]:
    """Start a processes sweep of slow cells in a driver subprocess, wait until two cells are
    stored, then send ``sig`` to the driver only."""
    store, log = tmp_path / "store", tmp_path / "log"
    log.touch()
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        import _sweep_cells as cells
        from pdlt.experiment.sweep import sweep
        sweep(cells.logged_sleep, {{"x": list(range({N_CELLS})), "log": [{str(log)!r}],
              "seconds": [{SLEEP}]}}, store={str(store)!r}, scheduler="processes", n_workers=2)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 90
    while len(list((store / "cells").glob("*.json"))) < 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the sweep ended or stalled before the signal: {proc.stderr.read()}")
        time.sleep(0.02)
    os.kill(proc.pid, sig)
    return proc, store, log


def _check_workers_gone(log: Path, within: float) -> None:
    pids = {int(line.split()[2]) for line in log.read_text().split("\n") if line}
    deadline = time.monotonic() + within
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids), "worker processes outlived the driver"
    # and nothing ran after: the log no longer grows
    size = log.stat().st_size
    time.sleep(2 * SLEEP)
    assert log.stat().st_size == size


def _check_store(store: Path, log: Path) -> None:
    done = {int(line.split()[1]) for line in log.read_text().split("\n") if line.startswith("done")}
    stored = {r["params"]["x"] for r in _stored(store).values() if r["status"] == "ok"}
    assert 2 <= len(stored) < N_CELLS
    # every stored cell ran to the end; at most the cells in flight (2) finished unstored
    assert stored <= done and len(done - stored) <= 2


# Each of these starts a driver and two spawned workers that import torch: ~15 s on 2 busy cores.
# SIGINT (the common case, Ctrl-C) stays in the default run; SIGTERM and SIGKILL are slow tests.
@pytest.mark.parametrize(
    "sig",
    [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
    ids=["SIGINT", "SIGTERM"],
)
def test_interrupt_stops_workers_and_keeps_finished_cells(tmp_path, sig):
    proc, store, log = _run_and_signal(tmp_path, sig)
    t0 = time.monotonic()
    rc = proc.wait(timeout=30)
    assert time.monotonic() - t0 < 10, "the driver took too long to stop"
    if sig == signal.SIGINT:
        assert rc != 0 and b"KeyboardInterrupt" in proc.stderr.read()
    else:
        assert rc == -signal.SIGTERM
    _check_workers_gone(log, within=5)
    _check_store(store, log)


@pytest.mark.slow
def test_killed_driver_takes_its_workers_with_it(tmp_path):
    proc, store, log = _run_and_signal(tmp_path, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    # workers notice their parent is gone and exit (they may finish the cell in hand: no
    # graceful path exists after SIGKILL, but no queued cell starts)
    _check_workers_gone(log, within=SLEEP + 5)
    _check_store(store, log)
