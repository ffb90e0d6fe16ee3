"""How many torch intra-op threads pdlt's own work uses.

The layer walks are long chains of elementwise passes over N² entries: memory-bound, each
pass too short to amortise waking a second thread — and on a shared machine a second thread
that waits for a busy core stalls every pass (the same call measured 6–100× slower with two
threads than with one on a loaded 2-core machine). So pdlt runs its walks (and the inputs'
Gram matrix), and the ensembles of :func:`pdlt.measure` / :func:`pdlt.empirical_ntk` (sized
by their largest activation tensor per chunk), on one thread, and on more only where the
per-pass work is large enough to pay (≥ ``PARALLEL_ENTRIES`` entries). The user decides
instead with the environment variable ``PDLT_NUM_THREADS`` (an int ≥ 1), read at each call.
torch's own setting is restored after. ``benchmarks/bench_threads.py`` measures the choice
against one and two threads on a loaded machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# Entries per elementwise pass above which a second thread pays (measured: relu/erf kernel
# steps at N = 2000, ~4·10⁶ entries, gain ~1.6× on an idle 2-core machine; at N = 1000 ~1.1×,
# and a loss when the other core is busy).
PARALLEL_ENTRIES = 4_000_000


def threads_for(entries: int) -> int:
    """The thread count for a walk whose passes touch ``entries`` float64 entries."""
    env = os.environ.get("PDLT_NUM_THREADS")
    if env is not None:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"PDLT_NUM_THREADS must be an int ≥ 1, got {env!r}") from None
        if n < 1:
            raise ValueError(f"PDLT_NUM_THREADS must be an int ≥ 1, got {env!r}")
        return n
    return 1 if entries < PARALLEL_ENTRIES else torch.get_num_threads()


@contextmanager
def walk_threads(entries: int) -> Iterator[int]:
    """Run the enclosed torch work on :func:`threads_for` (``entries``) threads."""
    before = torch.get_num_threads()
    n = threads_for(entries)
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
