"""The sweep engine: cells as pure functions, a file store that survives a killed sweep, and the
same results serially, on local processes and on Dask."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pdlt.experiment.sweep import FileStore, SweepError, grid_cells, sweep

sys.path.insert(0, str(Path(__file__).parent))
import _sweep_cells as cells  # noqa: E402

GRID = {"x": [1, 2, 3], "offset": [0.0, 0.5]}


def test_serial_sweep_results_and_frame():
    res = sweep(cells.square, GRID, seeds=[0, 1])
    df = res.to_frame()
    assert len(df) == 12 and res.computed == 12 and res.cached == 0
    np.testing.assert_allclose(df.y, df.x**2 + df.offset)
    # a cell is a pure function of (params, seed): the same seed gives the same draw
    assert df.groupby("seed").noise.nunique().tolist() == [1, 1]


def test_keys_are_stable_and_distinguish_everything():
    a = grid_cells(GRID, [0], name="m:f")
    b = grid_cells(GRID, [0], name="m:f")
    assert [c.key for c in a] == [c.key for c in b]
    assert len({c.key for c in grid_cells(GRID, [0, 1], name="m:f")}) == 12
    assert a[0].key != grid_cells(GRID, [0], name="m:g")[0].key
    assert a[0].key != grid_cells(GRID, [0], name="m:f", constants_hash="x")[0].key


def test_store_resumes_and_reuses_overlap(tmp_path):
    first = sweep(cells.square, {"x": [1, 2]}, store=tmp_path)
    assert first.computed == 2
    again = sweep(cells.square, {"x": [1, 2, 3]}, store=tmp_path)
    assert (again.computed, again.cached) == (1, 2)
    assert again.to_frame().y.tolist() == [1, 4, 9]
    assert json.loads((tmp_path / "sweep.json").read_text())["fn"].endswith("square")


def test_unreadable_cell_file_is_recomputed(tmp_path):
    res = sweep(cells.square, {"x": [4]}, store=tmp_path)
    FileStore(tmp_path).path(res.cells[0].key).write_text("{ truncated")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = sweep(cells.square, {"x": [4]}, store=tmp_path)
    assert again.computed == 1 and again.to_frame().y.tolist() == [16]


def test_array_constants_enter_the_key(tmp_path):
    w1, w2 = np.ones(3), np.arange(3.0)
    r1 = sweep(cells.weighted_sum, {"a": [2.0]}, constants={"w": w1}, store=tmp_path)
    r2 = sweep(cells.weighted_sum, {"a": [2.0]}, constants={"w": w2}, store=tmp_path)
    assert r2.computed == 1  # different data: not confused with the stored cell
    assert (r1.to_frame().s[0], r2.to_frame().s[0]) == (6.0, 6.0)
    r3 = sweep(cells.weighted_sum, {"a": [2.0]}, constants={"w": w1.copy()}, store=tmp_path)
    assert r3.cached == 1


def test_sweep_killed_midway_resumes_without_loss(tmp_path):
    """Really kill a sweep (SIGKILL, no chance to clean up) and run it again."""
    store, log = tmp_path / "store", tmp_path / "calls.log"
    xs = list(range(8))
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import _sweep_cells as cells
        from pdlt.experiment.sweep import sweep
        sweep(cells.slow_square, {{"x": {xs}, "log": [{str(log)!r}]}}, store={str(store)!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    cell_dir = store / "cells"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if cell_dir.exists() and len(list(cell_dir.glob("*.json"))) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail("the sweep subprocess ended before it could be killed")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = len(list(cell_dir.glob("*.json")))
    assert 3 <= done < len(xs), done  # killed mid-way
    res = sweep(cells.slow_square, {"x": xs, "log": [str(log)]}, store=store)
    assert (res.cached, res.computed) == (done, len(xs) - done)
    assert res.to_frame().y.tolist() == [x * x for x in xs]
    calls = [int(v) for v in log.read_text().split()]
    # every cell ran to completion once; at most the one in flight at the kill ran twice
    assert sorted(set(calls)) == xs and len(calls) - len(xs) <= 1
    # atomic writes: every stored file is complete JSON, even though the writer was killed
    for f in cell_dir.glob("*.json"):
        assert "result" in json.loads(f.read_text())


def test_processes_give_the_serial_results():
    serial = sweep(cells.square, GRID, seeds=[3]).to_frame()
    par = sweep(cells.square, GRID, seeds=[3], scheduler="processes", n_workers=2).to_frame()
    np.testing.assert_array_equal(serial[["x", "offset", "seed"]], par[["x", "offset", "seed"]])
    np.testing.assert_allclose(serial[["y", "noise"]], par[["y", "noise"]], rtol=0, atol=0)


def test_dask_client_and_address(tmp_path):
    distributed = pytest.importorskip("distributed")
    serial = sweep(cells.square, GRID, seeds=[2]).to_frame()
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as client:
        on_client = sweep(cells.square, GRID, seeds=[2], scheduler=client, store=tmp_path)
        np.testing.assert_allclose(on_client.to_frame()[["y", "noise"]], serial[["y", "noise"]])
        by_address = sweep(cells.square, {"x": [5]}, seeds=[2], scheduler=client.scheduler.address)
        assert by_address.to_frame().y.tolist() == [25]
    resumed = sweep(cells.square, GRID, seeds=[2], store=tmp_path)
    assert resumed.cached == 6 and resumed.computed == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-empty mapping"):
        sweep(cells.square, {})
    with pytest.raises(ValueError, match="empty"):
        sweep(cells.square, {"x": []})
    with pytest.raises(ValueError, match="other than 'seed'"):
        sweep(cells.square, {"seed": [1]})
    with pytest.raises(ValueError, match="scheduler"):
        sweep(cells.square, {"x": [1]}, scheduler="threads")
    with pytest.raises(ValueError, match="module-level"):
        sweep(lambda x, seed: {"y": x}, {"x": [1]}, scheduler="processes")
    # a cell breaking the contract is a failed cell: reported with its TypeError at the end
    with pytest.raises(SweepError, match="TypeError: a sweep cell must return a dict"):
        sweep(lambda x, seed: x, {"x": [1]})
    with pytest.raises(SweepError, match="TypeError: .*JSON-like"):
        sweep(lambda x, seed: {"y": object()}, {"x": [1]})
    with pytest.raises(ValueError, match="errors"):
        sweep(cells.square, {"x": [1]}, errors="ignore")
    with pytest.raises(ValueError, match="seeds"):
        sweep(cells.square, {"x": [1]}, seeds=[-1])
    with pytest.raises(ValueError, match="clashes"):
        sweep(cells.square, {"x": [1]}, constants={"x": 2})
