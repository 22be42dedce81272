"""What runs on a worker: thread limits, and one study into its own output folder.

:func:`process_study` never raises for a bad study: it returns a
:class:`StudyOutcome` with the failing stage and error, so one study cannot
stop a cohort. It runs unchanged in a local process pool and on a Dask worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..config import PipelineSettings
    from .discover import StudyTask

__all__ = ["THREAD_ENV_VARS", "StudyOutcome", "configure_threads", "peak_rss_mb", "process_study"]

log = logging.getLogger(__name__)

#: environment variables that size the BLAS/OpenMP thread pools (read when those libraries load)
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                   "NUMEXPR_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")

#: name of the per-study log file and of the record a failed study leaves
LOG_NAME = "run.log"
FAILURE_NAME = "failure.json"


@dataclass
class StudyOutcome:
    """The result of one study, small enough to send back from a worker."""

    study_id: str
    status: str  # "ok" | "failed"
    runtime_s: float
    report: dict[str, Any] | None = None
    stage: str = ""
    error_type: str = ""
    message: str = ""
    peak_rss_mb: float = 0.0
    pid: int = field(default_factory=os.getpid)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (0 where unknown)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0.0
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024.0, 1)  # Linux reports KiB


def configure_threads(n: int) -> None:
    """Limit this process' compute threads to ``n`` (ITK, and BLAS/OpenMP where possible).

    The environment variables only reach libraries loaded after this call, so
    local workers get them from the parent at start-up too (see
    :func:`bmeseg.batch.executors.worker_environment`).
    """
    n = max(1, int(n))
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n)
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    try:  # already-loaded BLAS pools, when threadpoolctl is there
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass


def init_local_worker(threads: int, log_level: int) -> None:
    """Initializer of a local pool process: thread limits; logs go to each study's run.log only."""
    import importlib

    configure_threads(threads)
    for mod in ("pipeline", "register", "marrow", "edema", "measure", "report", "io.dicom", "io.nifti"):
        importlib.import_module(f"bmeseg.{mod}")  # import once at start-up, not inside the first study's time
    lg = logging.getLogger("bmeseg")
    lg.setLevel(log_level)
    lg.propagate = False  # the parent shows progress; details are in OUT/<study>/run.log


def init_dask_worker(host_threads: int | None = None, dask_worker: Any = None) -> int:
    """Run on every Dask worker (``client.run``): ITK/BLAS threads = cores / task threads on this host.

    ``host_threads`` is the number of task threads of all workers on this
    worker's host (so two 1-thread workers on 2 cores get 1 ITK thread each);
    default: this worker's own thread count.
    """
    nthreads = 1
    if dask_worker is not None:
        nthreads = int(getattr(getattr(dask_worker, "state", dask_worker), "nthreads", 1) or 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_task = max(1, cores // max(1, host_threads or nthreads))
    configure_threads(per_task)
    lg = logging.getLogger("bmeseg")
    if lg.getEffectiveLevel() > logging.INFO:
        lg.setLevel(logging.INFO)
    return per_task


class _ThreadFilter(logging.Filter):
    """Keep records of one thread (Dask runs several studies per process, one per thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.ident = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.ident


def _open_log(path: Path) -> logging.Handler:
    h = logging.FileHandler(path, encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    h.setLevel(logging.DEBUG)
    h.addFilter(_ThreadFilter())
    logging.getLogger("bmeseg").addHandler(h)
    return h


def process_study(
    task: StudyTask, out_root: str | os.PathLike[str], settings: PipelineSettings, input_hash: str,
) -> StudyOutcome:
    """Run one study into ``out_root/<study_id>/`` (written beside, renamed when complete).

    A successful study leaves the outputs of ``bmeseg run`` plus ``run.log``;
    ``report.json`` gains ``batch`` {study_id, input_hash, source}. A failed
    study leaves ``run.log`` and ``failure.json`` (stage, error type, message,
    traceback) instead, so a re-run retries it. Either way the folder appears
    complete or not at all.
    """
    from ..io.atomic import atomic_dir
    from ..pipeline import run_study
    from ..report import write_json

    t0 = time.perf_counter()
    final = Path(out_root) / task.study_id
    outcome: StudyOutcome
    with atomic_dir(final, replace=True) as tmp:
        handler = _open_log(tmp / LOG_NAME)
        stage = "start"
        try:
            log.info("study %s (%s): %d input files", task.study_id, task.source, len(task.files))
            for note in task.notes:
                log.warning("%s", note)
            stage = "input"
            inp = task.study_input()
            result = run_study(inp, tmp, settings=settings, force=True)
            stage = "report"
            report = dict(result.report)
            report["warnings"] = list(task.notes) + list(report.get("warnings", []))
            report["batch"] = {"study_id": task.study_id, "input_hash": input_hash, "source": task.source,
                               "kind": task.kind, "study_instance_uid": task.study_instance_uid,
                               "patient_id": task.patient_id, "study_date": task.study_date}
            write_json(report, tmp / "report.json")
            runtime = round(time.perf_counter() - t0, 3)
            log.info("study %s done in %.1f s", task.study_id, runtime)
            outcome = StudyOutcome(task.study_id, "ok", runtime, report=report, peak_rss_mb=peak_rss_mb())
        except Exception as exc:
            stage = str(getattr(exc, "bmeseg_stage", stage))
            msg = str(exc).strip()
            log.error("study %s failed at stage %s: %s: %s\n%s", task.study_id, stage, type(exc).__name__, msg,
                      traceback.format_exc())
            runtime = round(time.perf_counter() - t0, 3)
            outcome = StudyOutcome(task.study_id, "failed", runtime, stage=stage, error_type=type(exc).__name__,
                                   message=msg, peak_rss_mb=peak_rss_mb())
            write_json({"study_id": task.study_id, "source": task.source, "input_hash": input_hash,
                        "stage": stage, "error_type": type(exc).__name__, "message": msg,
                        "traceback": traceback.format_exc()}, tmp / FAILURE_NAME)
        finally:
            logging.getLogger("bmeseg").removeHandler(handler)
            handler.close()
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it private; a study folder is an ordinary folder
    return outcome


def _umask() -> int:
    """This process' umask, read without changing it (Linux); 0o022 elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022
