"""Running many small fits: one BLAS thread each, optionally across worker processes.

The fits are thousands of tiny L-BFGS-B problems. OpenBLAS's own threads only slow
those down (they spin on a busy machine), so every fit runs with one BLAS thread, and
parallelism comes from processes instead (`--workers`).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import sys
from typing import Callable, Iterable, Iterator, TypeVar

from threadpoolctl import threadpool_limits

from synthscale.cli import resolve_workers

T = TypeVar("T")
R = TypeVar("R")


def one_blas_thread():
    """Context manager: BLAS libraries loaded now use one thread inside it."""
    return threadpool_limits(1)


def _call_limited(fn: Callable[[T], R], task: T) -> R:
    """Run one task with one BLAS thread. Limits apply to the libraries loaded at that moment,
    and a worker loads scipy's own OpenBLAS only when its first task imports the fitting code,
    so the limit is set around every task, not once when the worker starts."""
    with threadpool_limits(1):
        return fn(task)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[cf.Executor | None]:
    """A process pool for `workers` > 1 (0: all cores; spawned, so safe after torch or threads), else None."""
    workers = resolve_workers(workers)
    if workers <= 1:
        yield None
        return
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield pool


def map_tasks(
    fn: Callable[[T], R],
    tasks: Iterable[T],
    pool: cf.Executor | None,
    desc: str | None = None,
) -> list[R]:
    """[fn(t) for t in tasks], in order, on the pool when there is one, one BLAS thread each."""
    tasks = list(tasks)
    progress = _progress(len(tasks), desc)
    results: list[R] = []
    with threadpool_limits(1):
        if pool is None:
            for task in tasks:
                results.append(fn(task))
                progress.update(1)
        else:
            futures = [pool.submit(_call_limited, fn, task) for task in tasks]
            for future in futures:
                results.append(future.result())
                progress.update(1)
    progress.close()
    return results


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str | None):
    if desc is None or total < 2 or not sys.stderr.isatty():
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False)
