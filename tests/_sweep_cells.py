"""Importable cell functions for the sweep tests (process and Dask workers import them)."""

import os
import time

import numpy as np


def square(x, seed, offset=0.0):
    rng = np.random.default_rng(seed)
    return {"y": x * x + offset, "noise": float(rng.normal())}


def slow_square(x, seed, log):
    """Sleeps, then appends 'x' to the log file (so a test can count how often it ran)."""
    time.sleep(0.25)
    with open(log, "a") as fh:
        fh.write(f"{x}\n")
        fh.flush()
        os.fsync(fh.fileno())
    return {"y": x * x + seed}


def weighted_sum(a, seed, w):
    return {"s": float(np.dot(w, np.full(len(w), a)))}


def fails_on(x, seed, bad):
    """x² + seed, except for x == bad, which raises (a failing cell)."""
    if x == bad:
        raise ZeroDivisionError(f"cell x={x} fails on purpose")
    return {"y": x * x + seed}


def logged_sleep(x, seed, log, seconds):
    """Logs 'start x pid' before and 'done x pid' after sleeping ``seconds``."""
    for stage in ("start", None):
        if stage is None:
            time.sleep(seconds)
            stage = "done"
        with open(log, "a") as fh:
            fh.write(f"{stage} {x} {os.getpid()}\n")
            fh.flush()
            os.fsync(fh.fileno())
    return {"y": x}
