"""Sweeps: grids of experiments, resumable, run serially, on local processes or on Dask.

A sweep is a function ``fn(**params, seed=seed, **constants) -> dict`` evaluated on every cell of
a grid (the Cartesian product of the parameter lists, times the seeds). Each cell is a pure
function of its parameters, seed and constants, so:

* a cell is identified by a key, the hash of (fn's import name, params, seed, constants);
* its result is written to a local file store (``<store>/cells/<key>.json``, atomically: write
  to a temporary file, then rename) the moment it arrives, under every scheduler, so a sweep that
  is killed loses at most the cells in flight, and running it again computes only the missing
  cells. A stored cell carries its key, function, parameters, seed and constants hash, and is
  checked against the cell asking for it when read back (a file copied from another cell is not
  taken for this one);
* a cell that raises is stored as *failed*, with its traceback, and the other cells go on; the
  sweep raises :class:`SweepError` at the end (or, with ``errors="keep"``, returns the failures
  beside the results). A failed cell is retried by the next run;
* SIGINT (Ctrl-C) and SIGTERM stop the workers at once (cells already finished are stored), and
  local workers exit by themselves if the driver dies (SIGKILL);
* where it runs does not matter: ``scheduler="serial"`` (default), ``"processes"`` (local
  worker processes), a Dask scheduler address (``"tcp://host:8786"``) or a
  ``dask.distributed.Client`` give the same results. Results travel back to the driver, which
  alone writes the store, so workers need no shared file system.

For process and Dask workers ``fn`` must be importable (a module-level function); workers
started here get the driver's ``sys.path``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import numbers
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdlt.experiment.ensemble import progress_bar, progress_enabled

CellFn = Callable[..., Mapping[str, Any]]
LOCAL_SCHEDULERS = ("serial", "processes")


@dataclass(frozen=True)
class Cell:
    """One point of a sweep: ``fn(**params, seed=seed, **constants)``; ``key`` names its result.

    ``fn`` (import name) and ``constants`` (hash of the constants) are what the key was made of
    beside ``params`` and ``seed``; a stored record must repeat all of them to count as this
    cell's.
    """

    params: Mapping[str, Any]
    seed: int
    key: str
    fn: str = ""
    constants: str = ""

    def identity(self) -> dict[str, Any]:
        """The fields a stored record of this cell carries and is checked against."""
        return {
            "key": self.key,
            "fn": self.fn,
            "params": dict(self.params),
            "seed": self.seed,
            "constants": self.constants,
        }


class SweepError(RuntimeError):
    """Some cells of a sweep failed; every other cell finished (and is stored, with a store).

    Attributes
    ----------
    failures:
        ``{key: (cell, error, traceback)}`` for each failed cell.
    result:
        The :class:`SweepResult` of the whole sweep, None in place of each failed cell's result.
    """

    def __init__(self, message: str, failures: Mapping, result: SweepResult) -> None:
        super().__init__(message)
        self.failures = failures
        self.result = result


@dataclass(frozen=True)
class SweepResult:
    """What a sweep produced.

    Attributes
    ----------
    cells:
        Every cell of the grid, in grid order.
    results:
        The dict each cell returned (same order); None for a failed cell.
    computed, cached:
        How many cells ran now, and how many were read back from the store.
    store:
        The store folder (None for an in-memory sweep).
    failures:
        ``{key: (cell, error, traceback)}`` of the cells that raised (empty when all succeeded).
    """

    cells: tuple[Cell, ...]
    results: tuple[Mapping[str, Any] | None, ...]
    computed: int
    cached: int
    store: Path | None
    failures: Mapping[str, tuple[Cell, str, str]] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """One row per cell: its parameters, seed and every returned value (and an ``error``
        column naming the exception of each failed cell, when some failed)."""
        rows = []
        for c, r in zip(self.cells, self.results, strict=True):
            row = {**c.params, "seed": c.seed, **(r or {})}
            if self.failures:
                row["error"] = self.failures[c.key][1] if c.key in self.failures else None
            rows.append(row)
        return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# cells and keys


def _jsonable(value: Any, what: str) -> Any:
    """Plain JSON types from numpy scalars/arrays and nested lists/dicts; reject the rest."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray):
        return [_jsonable(v, what) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, what) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, what) for k, v in value.items()}
    raise TypeError(
        f"{what} must be JSON-like (numbers, strings, lists, dicts, numpy arrays), got "
        f"{type(value).__name__}"
    )


def fn_name(fn: CellFn) -> str:
    """The import name ``module:qualname`` that identifies a cell function."""
    if not callable(fn):
        raise TypeError(f"fn must be a callable returning a dict, got {type(fn).__name__}")
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def _fingerprint(constants: Mapping[str, Any]) -> str:
    """A hash of the constants: arrays by dtype, shape and bytes, the rest as JSON."""
    h = hashlib.sha256()
    for name in sorted(constants):
        v = constants[name]
        h.update(name.encode())
        if isinstance(v, np.ndarray) or hasattr(v, "__array__"):
            a = np.ascontiguousarray(np.asarray(v))
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(json.dumps(_jsonable(v, f"constant {name!r}"), sort_keys=True).encode())
    return h.hexdigest()


def cell_key(name: str, params: Mapping[str, Any], seed: int, constants_hash: str = "") -> str:
    """Hex key of one cell (sha256 of its canonical JSON description, 24 hex digits)."""
    text = json.dumps(
        {"fn": name, "params": params, "seed": seed, "constants": constants_hash}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def grid_cells(
    grid: Mapping[str, Sequence[Any]],
    seeds: Iterable[int] = (0,),
    *,
    name: str = "",
    constants_hash: str = "",
) -> tuple[Cell, ...]:
    """The cells of a grid: the product of the parameter lists (first key slowest), × seeds."""
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError("grid must be a non-empty mapping {parameter name: list of values}")
    axes = {}
    for k, values in grid.items():
        if not isinstance(k, str) or not k.isidentifier() or k == "seed":
            raise ValueError(f"grid keys must be parameter names other than 'seed', got {k!r}")
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
            raise TypeError(f"grid[{k!r}] must be a list of values, got {type(values).__name__}")
        if len(values) == 0:
            raise ValueError(f"grid[{k!r}] is empty")
        axes[k] = [_jsonable(v, f"grid[{k!r}] values") for v in values]
    seeds = list(seeds)
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise ValueError(f"seeds must be non-negative ints, got {s!r}")
    if not seeds:
        raise ValueError("seeds must contain at least one seed")
    cells = []
    for combo in itertools.product(*axes.values()):
        params = dict(zip(axes, combo, strict=True))
        for s in seeds:
            key = cell_key(name, params, int(s), constants_hash)
            cells.append(Cell(params, int(s), key, name, constants_hash))
    return tuple(cells)


# --------------------------------------------------------------------------------------------
# the file store


class FileStore:
    """Cell records as ``<root>/cells/<key>.json``, each written atomically (temp file + rename).

    A record is ``{key, fn, params, seed, constants, status, ...}`` with ``status`` "ok" and the
    cell's ``result``, or "failed" with ``error`` and ``traceback``. Reading a cell back checks
    the record against the cell: a file that cannot be read (a disk filled mid-write, a hand
    edit), that describes another cell (copied over), or whose result is not a non-empty dict
    counts as missing, with a warning, and its cell is computed again. A failed record counts as
    missing without a warning (the failure was reported when it happened).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.cells = self.root / "cells"
        self.cells.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.cells / f"{key}.json"

    def record(self, cell: Cell) -> dict | None:
        """The stored record of ``cell`` if there is one and it is this cell's, else None."""
        p = self.path(cell.key)
        if not p.exists():
            return None
        try:
            record = json.loads(p.read_text(encoding="utf-8"))
            problem = _record_problem(record, cell)
        except (OSError, ValueError) as exc:
            problem = f"unreadable ({exc})"
        if problem:
            warnings.warn(
                f"sweep store: cell file {p.name} is {problem}; it will be recomputed",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        return record

    def get(self, cell: Cell) -> dict | None:
        """The stored result of ``cell``, or None if it is missing, failed or not verified."""
        record = self.record(cell)
        if record is None or record.get("status", "ok") != "ok":
            return None
        return dict(record["result"])

    def put_result(self, cell: Cell, result: Mapping[str, Any]) -> None:
        """Store a finished cell."""
        self.put(cell.key, {**cell.identity(), "status": "ok", "result": dict(result)})

    def put_failure(self, cell: Cell, error: str, trace: str) -> None:
        """Store a failed cell, with the exception and its traceback."""
        self.put(
            cell.key, {**cell.identity(), "status": "failed", "error": error, "traceback": trace}
        )

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.cells, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.cells.glob("*.json"))

    def describe(self, info: Mapping[str, Any]) -> None:
        """Write ``sweep.json`` (what the store holds) once, for people reading the folder."""
        target = self.root / "sweep.json"
        if not target.exists():
            target.write_text(json.dumps(info, indent=1, sort_keys=True), encoding="utf-8")


def _record_problem(record: Any, cell: Cell) -> str:
    """What is wrong with a stored record as ``cell``'s record ("" if nothing)."""
    if not isinstance(record, dict):
        return f"not a record (a JSON {type(record).__name__})"
    # records written before keys were stored lack "key" and "constants": check what they have
    expected = {k: v for k, v in cell.identity().items() if k in record or k in ("fn", "params")}
    expected["seed"] = cell.seed
    for name, want in expected.items():
        have = record.get(name)
        if have != want:
            return f"not this cell's (its {name} is {have!r}, this cell's is {want!r})"
    status = record.get("status", "ok")
    if status == "failed":
        return ""
    if status != "ok":
        return f"of unknown status {status!r}"
    result = record.get("result")
    if not isinstance(result, dict) or not result:
        return f"without a result (result = {result!r})"
    return ""


# --------------------------------------------------------------------------------------------
# running cells


def run_cell(
    fn: CellFn, params: Mapping[str, Any], seed: int, constants: Mapping[str, Any]
) -> dict:
    """Evaluate one cell and return its JSON-ready result, with the wall ``seconds`` and the
    ``cpu_seconds`` (process time; on a shared machine the better measure of cost) it took."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(**params, seed=seed, **constants)
    if not isinstance(out, Mapping):
        raise TypeError(
            f"a sweep cell must return a dict, {fn_name(fn)} returned {type(out).__name__}"
        )
    result = _jsonable(dict(out), f"the result of {fn_name(fn)}")
    result.setdefault("seconds", time.perf_counter() - t0)
    result.setdefault("cpu_seconds", time.process_time() - c0)
    return result


def _run_cell_safely(
    fn: CellFn, params: Mapping[str, Any], seed: int, constants: Mapping[str, Any]
) -> tuple[str, Any, str]:
    """``("ok", result, "")`` or ``("failed", "Type: message", traceback)``: a cell's exception
    comes back as data, so one failing cell does not take the others with it."""
    try:
        return "ok", run_cell(fn, params, seed, constants), ""
    except Exception as exc:
        return "failed", f"{type(exc).__name__}: {exc}", traceback.format_exc()


def _outcome(future: Any) -> tuple[str, Any, str]:
    """A finished future's outcome; a worker that died (or a Dask error) is a failed cell."""
    try:
        return future.result()
    except Exception as exc:
        trace = "".join(traceback.format_exception(exc))
        return "failed", f"{type(exc).__name__} (the worker failed): {exc}", trace


def _exit_with_parent(sentinel: int) -> None:
    from multiprocessing.connection import wait

    wait([sentinel])
    os._exit(1)


def _worker_init(path: list[str], threads: int) -> None:
    import multiprocessing

    sys.path[:] = path
    # Ctrl-C reaches the whole process group: the driver handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # If the driver dies without stopping us (SIGKILL), exit instead of running queued cells.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), daemon=True).start()
    import torch

    torch.set_num_threads(threads)


def _importable(fn: CellFn, where: str) -> None:
    q = getattr(fn, "__qualname__", "")
    if "<lambda>" in q or "<locals>" in q:
        raise ValueError(
            f"cells run {where} must use an importable module-level function, got {fn_name(fn)}"
        )


def _stop_pool(pool: Any) -> None:
    """Cancel what has not started and kill the workers now (cells in flight are lost)."""
    # Python < 3.14 has no public way to kill an executor's workers: use its process table.
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)


def _as_completed_local(fn, todo, constants, n_workers):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // n_workers)
    pool = ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
        initargs=(list(sys.path), threads),
    )
    finished = False
    try:
        futures = {pool.submit(_run_cell_safely, fn, c.params, c.seed, constants): c for c in todo}
        for fut in as_completed(futures):
            yield futures[fut], _outcome(fut)
        finished = True
    finally:
        # interrupted, terminated, or abandoned by the driver: no cell may run on unseen
        if finished:
            pool.shutdown(wait=True)
        else:
            _stop_pool(pool)


def _as_completed_dask(fn, todo, constants, scheduler):
    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - dask is an optional dependency
        raise ImportError(
            "running a sweep on Dask needs `pip install 'dask[distributed]'` (or pdlt[dask])"
        ) from exc
    own = isinstance(scheduler, str)
    client = Client(scheduler) if own else scheduler
    futures: dict = {}
    finished = False
    try:
        const = {k: client.scatter(v, broadcast=True) for k, v in constants.items()}
        futures = {
            client.submit(
                _run_cell_safely, fn, c.params, c.seed, const, key=f"pdlt-cell-{c.key}", pure=False
            ): c
            for c in todo
        }
        for fut in as_completed(futures):
            yield futures[fut], _outcome(fut)
        finished = True
    finally:
        if not finished and futures:
            client.cancel(list(futures))
        if own:
            client.close()


class _Terminated(BaseException):
    """SIGTERM, raised in the driver so that the workers are stopped before it exits."""


@contextmanager
def _terminate_cleanly():
    """Turn SIGTERM into an exception for the duration (main thread only), then, after the
    cleanup the exception triggers, deliver it again to the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, previous)
        signal.raise_signal(signal.SIGTERM)
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def sweep(
    fn: CellFn,
    grid: Mapping[str, Sequence[Any]],
    *,
    seeds: Iterable[int] = (0,),
    constants: Mapping[str, Any] | None = None,
    store: str | os.PathLike | FileStore | None = None,
    scheduler: Any = "serial",
    n_workers: int | None = None,
    progress: bool | None = None,
    errors: str = "raise",
) -> SweepResult:
    """Evaluate ``fn(**params, seed=seed, **constants)`` on every cell of ``grid`` × ``seeds``.

    Parameters
    ----------
    fn:
        A function returning a dict of JSON-like values (numbers, strings, lists, arrays).
    grid:
        ``{name: [values]}``; cells are the Cartesian product (first name slowest).
    seeds:
        Replicate seeds; every cell runs once per seed.
    constants:
        Keyword arguments shared by every cell (e.g. a data set); they enter the cell keys
        through a hash of their contents.
    store:
        A folder (or :class:`FileStore`): finished cells are read from it and new ones written
        to it as they finish, so an interrupted sweep resumes. None: keep results in memory.
    scheduler:
        ``"serial"``, ``"processes"`` (``n_workers`` local processes, default the CPU count), a
        Dask scheduler address, or a ``dask.distributed.Client``.
    progress:
        Progress bar over cells (default: only on a terminal).
    errors:
        ``"raise"`` (default): when cells raise, run all the others, store them, then raise
        :class:`SweepError` with every failure and its traceback. ``"keep"``: return the
        :class:`SweepResult` with None for each failed cell and the failures in ``.failures``.

    Returns
    -------
    SweepResult

    Raises
    ------
    SweepError
        Some cells failed (``errors="raise"``); every other cell ran and is stored.

    Examples
    --------
    >>> res = sweep(my_cell, {"C_W": [0.5, 1.0, 2.0], "depth": [5, 10]}, store="runs/cw-depth")
    >>> res.to_frame().pivot(index="depth", columns="C_W", values="accuracy")
    """
    name = fn_name(fn)
    if errors not in ("raise", "keep"):
        raise ValueError(f"errors must be 'raise' or 'keep', got {errors!r}")
    constants = dict(constants or {})
    for k in constants:
        if k in grid or k == "seed":
            raise ValueError(f"constant {k!r} clashes with a grid parameter or the seed")
    chash = _fingerprint(constants) if constants else ""
    cells = grid_cells(grid, seeds, name=name, constants_hash=chash)
    if isinstance(scheduler, str) and scheduler not in LOCAL_SCHEDULERS and "://" not in scheduler:
        raise ValueError(
            f"scheduler must be 'serial', 'processes', a Dask address like 'tcp://host:8786' or a "
            f"dask.distributed.Client, got {scheduler!r}"
        )
    if n_workers is not None and (
        isinstance(n_workers, bool) or not isinstance(n_workers, numbers.Integral) or n_workers < 1
    ):
        raise ValueError(f"n_workers must be an int ≥ 1, got {n_workers!r}")
    fs = (
        store if isinstance(store, FileStore) else (FileStore(store) if store is not None else None)
    )
    if fs is not None:
        fs.describe(
            {
                "fn": name,
                "grid": {k: list(v) for k, v in grid.items()},
                "seeds": sorted({c.seed for c in cells}),
            }
        )

    results: dict[str, dict] = {}
    if fs is not None:
        for c in cells:
            r = fs.get(c)
            if r is not None:
                results[c.key] = r
    cached = len(results)
    todo = [c for c in cells if c.key not in results]
    if todo and scheduler != "serial":
        _importable(fn, f"on {scheduler if isinstance(scheduler, str) else 'Dask'}")
    if scheduler == "serial":
        stream = ((c, _run_cell_safely(fn, c.params, c.seed, constants)) for c in todo)
    elif scheduler == "processes":
        workers = n_workers or os.cpu_count() or 1
        stream = _as_completed_local(fn, todo, constants, min(workers, max(1, len(todo))))
    else:
        stream = _as_completed_dask(fn, todo, constants, scheduler)
    failures: dict[str, tuple[Cell, str, str]] = {}
    with (
        _terminate_cleanly(),
        closing(stream),
        progress_bar(f"sweep {name}", len(todo), progress_enabled(progress)) as advance,
    ):
        for cell, (status, value, trace) in stream if todo else ():
            if status == "ok":
                results[cell.key] = value
                if fs is not None:
                    fs.put_result(cell, value)
            else:
                failures[cell.key] = (cell, value, trace)
                if fs is not None:
                    fs.put_failure(cell, value, trace)
            advance(1)
    out = SweepResult(
        cells=cells,
        results=tuple(results.get(c.key) for c in cells),
        computed=len(todo),
        cached=cached,
        store=fs.root if fs is not None else None,
        failures=failures,
    )
    if failures and errors == "raise":
        cell, error, trace = next(iter(failures.values()))
        where = f"; the other cells are stored in {fs.root}" if fs is not None else ""
        raise SweepError(
            f"{len(failures)} of {len(cells)} sweep cells failed{where} (a failed cell is "
            f"retried by the next run; errors='keep' returns the others). First failure, "
            f"params {dict(cell.params)} seed {cell.seed}: {error}\n{trace}",
            failures,
            out,
        )
    return out


__all__ = [
    "Cell",
    "FileStore",
    "SweepError",
    "SweepResult",
    "cell_key",
    "grid_cells",
    "run_cell",
    "sweep",
]
