"""Where studies run: a local process pool (default) or an existing Dask distributed cluster.

Both yield :class:`~bmeseg.batch.worker.StudyOutcome` objects as studies
finish, and both run the same function, :func:`~bmeseg.batch.worker.process_study`.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .worker import THREAD_ENV_VARS, StudyOutcome, init_dask_worker, init_local_worker, process_study

if TYPE_CHECKING:  # pragma: no cover
    from ..config import PipelineSettings
    from .discover import StudyTask

__all__ = ["available_cores", "dask_client", "plan_local", "run_dask", "run_local", "worker_environment"]

log = logging.getLogger(__name__)

#: a study whose worker process dies this many times is recorded as failed
_MAX_WORKER_DEATHS = 2

Item = tuple["StudyTask", str]  # (task, input hash)


def available_cores() -> int:
    """CPUs this process may run on (affinity-aware)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)  # pragma: no cover


def plan_local(jobs: int | None, n_studies: int) -> tuple[int, int]:
    """``(workers, threads per worker)`` with workers x threads <= cores."""
    cores = available_cores()
    workers = cores if jobs is None else max(1, int(jobs))
    workers = max(1, min(workers, n_studies))
    return workers, max(1, cores // workers)


@contextlib.contextmanager
def worker_environment(threads: int) -> Iterator[None]:
    """Set the BLAS/OpenMP/ITK thread variables while worker processes start, then restore them."""
    old = {v: os.environ.get(v) for v in THREAD_ENV_VARS}
    try:
        for v in THREAD_ENV_VARS:
            os.environ[v] = str(threads)
        yield
    finally:
        for v, val in old.items():
            if val is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = val


def _died(task: StudyTask, exc: BaseException, runtime_s: float = 0.0) -> StudyOutcome:
    return StudyOutcome(task.study_id, "failed", runtime_s, stage="worker", error_type=type(exc).__name__,
                        message=f"the worker process died while running this study ({exc}); out of memory?")


def run_local(
    items: Sequence[Item], out_root: Path, settings: PipelineSettings, *, workers: int, threads: int,
) -> Iterator[StudyOutcome]:
    """Run ``items`` on ``workers`` fresh ("spawn") processes with ``threads`` threads each.

    A worker that dies (segfault, OOM kill) breaks the pool: the pool is
    rebuilt and the studies it was running are retried; a study that kills a
    worker twice is recorded as failed (stage ``worker``).
    """
    ctx = multiprocessing.get_context("spawn")  # no inherited threads or locks; env read at start-up
    level = logging.DEBUG if logging.getLogger("bmeseg").getEffectiveLevel() <= logging.DEBUG else logging.INFO
    pending = list(items)
    deaths: dict[str, int] = {}
    while pending:
        with worker_environment(threads):
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_local_worker,
                                       initargs=(threads, level))
        broken: list[Item] = []
        try:
            futs: dict[Future[StudyOutcome], Item] = {}
            with worker_environment(threads):  # processes start on submit
                for it in pending:
                    futs[pool.submit(process_study, it[0], out_root, settings, it[1])] = it
            pending = []
            not_done = set(futs)
            while not_done:
                done, not_done = wait(not_done, return_when=FIRST_COMPLETED)
                for f in done:
                    task = futs[f][0]
                    try:
                        yield f.result()
                    except BrokenProcessPool as exc:
                        deaths[task.study_id] = deaths.get(task.study_id, 0) + 1
                        if deaths[task.study_id] >= _MAX_WORKER_DEATHS:
                            yield _died(task, exc)
                        else:
                            broken.append(futs[f])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if broken:
            log.warning("a worker process died; retrying %d studies on a new pool", len(broken))
            pending = broken


def dask_client(scheduler: str) -> Any:
    """A ``distributed.Client`` for ``tcp://host:port`` (any address) or a scheduler JSON file."""
    from ..errors import MissingDependencyError

    try:
        import distributed
    except ImportError as exc:
        raise MissingDependencyError("distributed", "dask", "--scheduler (running on a Dask cluster)") from exc
    if scheduler.endswith(".json") or Path(scheduler).is_file():
        from ..errors import InputError

        if not Path(scheduler).is_file():
            raise InputError(f"{scheduler}: no such scheduler file")
        return distributed.Client(scheduler_file=scheduler, timeout="20s")
    return distributed.Client(scheduler, timeout="20s")


def _limit_worker_threads(client: Any) -> None:
    """Tell each worker how many task threads share its host, so ITK x tasks <= cores there."""
    workers = client.scheduler_info().get("workers", {})
    per_host: dict[str, int] = {}
    for w in workers.values():
        per_host[w.get("host", "")] = per_host.get(w.get("host", ""), 0) + int(w.get("nthreads", 1) or 1)
    for addr, w in workers.items():
        client.run(init_dask_worker, per_host[w.get("host", "")], workers=[addr])


def run_dask(
    items: Sequence[Item], out_root: Path, settings: PipelineSettings, *, scheduler: str | Any,
) -> Iterator[StudyOutcome]:
    """Run ``items`` on an existing Dask cluster (``scheduler``: address, scheduler file or a Client).

    ``out_root`` must be reachable from the workers (a shared file system).
    Each worker limits ITK/BLAS threads to cores / worker threads.
    """
    from distributed import as_completed

    own = isinstance(scheduler, str)
    client: Any = dask_client(scheduler) if own else scheduler
    try:
        _limit_worker_threads(client)
        futs = {}
        for task, h in items:
            f = client.submit(process_study, task, out_root, settings, h, pure=False,
                              key=f"bmeseg-study-{task.study_id}-{h[:12]}")
            futs[f.key] = (task, f)
        for f in as_completed([f for _, f in futs.values()]):
            task = futs[f.key][0]
            try:
                yield f.result()
            except Exception as exc:  # KilledWorker, lost worker, cancelled
                yield _died(task, exc)
    finally:
        if own:
            client.close()
