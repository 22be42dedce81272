"""Run a cohort: discover, skip what is up to date, process the rest, write the cohort tables.

Outputs in ``OUT``:

* ``OUT/<study id>/``: what ``bmeseg run`` writes, plus ``run.log``; a failed
  study has ``run.log`` and ``failure.json`` instead of the outputs;
* ``OUT/cohort.csv``: one row per study (:data:`COHORT_COLUMNS`);
* ``OUT/failures.csv``: one row per failed study (:data:`FAILURE_COLUMNS`);
* ``OUT/provenance.json``: versions, settings, host, CPUs, executor, start/end, command line.

A study is up to date when its ``report.json`` carries the same
:func:`input_hash` (input files' paths, sizes and modification times, the
resolved settings and the bmeseg version).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .discover import Discovery, StudyTask, discover_studies
from .worker import StudyOutcome

__all__ = ["COHORT_COLUMNS", "FAILURE_COLUMNS", "BatchResult", "cohort_row", "input_hash", "run_batch"]

log = logging.getLogger(__name__)

COHORT_COLUMNS = [
    "study_id", "status", "reused", "kind", "patient_id", "study_date", "study_instance_uid", "source",
    "t1_series", "stir_series", "bone_mask", "reference_mask", "marrow_volume_ml", "bme_volume_ml",
    "extent_fraction", "extent_score", "scoring_scheme", "n_lesions", "registration_status", "n_warnings",
    "warnings", "runtime_s", "failure_stage", "error", "input_hash",
]
FAILURE_COLUMNS = ["study_id", "stage", "error_type", "message", "source"]

_LOCK_NAME = ".bmeseg-batch.lock"


@dataclass
class BatchResult:
    """Summary of a batch run (the tables are in ``out_dir``)."""

    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    n_processed: int = 0
    n_reused: int = 0
    peak_rss_mb: dict[int, float] = field(default_factory=dict)  # per worker process id

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    @property
    def n_ok(self) -> int:
        return sum(r["status"] == "ok" for r in self.rows)


def input_hash(task: StudyTask, settings_dict: dict[str, Any], version: str) -> str:
    """SHA-256 of the study's input files and masks (path, size, mtime), the resolved settings and the version."""
    files = []
    for p in sorted(str(f) for f in (*task.files, *task.mask_files)):
        try:
            st = os.stat(p)
            files.append([p, st.st_size, st.st_mtime_ns])
        except OSError:
            files.append([p, None, None])
    blob = json.dumps({"files": files, "settings": settings_dict, "bmeseg": version,
                       "t1": str(task.t1_path), "stir": str(task.stir_path)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _series_label(meta: dict[str, Any]) -> str:
    if "path" in meta:
        return str(meta["path"])
    num = meta.get("series_number")
    return f"{num if num is not None else '?'}: {meta.get('series_description') or ''}".strip()


def cohort_row(task: StudyTask, status: str, *, report: dict[str, Any] | None = None, runtime_s: float | None = None,
               reused: bool = False, stage: str = "", error: str = "", h: str = "") -> dict[str, Any]:
    """One ``cohort.csv`` row from a study's report (or its failure)."""
    row: dict[str, Any] = {
        "study_id": task.study_id, "status": status, "reused": reused, "kind": task.kind,
        "patient_id": task.patient_id, "study_date": task.study_date,
        "study_instance_uid": task.study_instance_uid, "source": task.source,
        "failure_stage": stage, "error": error, "input_hash": h,
        "runtime_s": None if runtime_s is None else round(runtime_s, 2),
        # the masks given (--masks), also for a study that failed
        "bone_mask": str(task.bone_mask or ""), "reference_mask": str(task.reference_mask or ""),
    }
    if report is not None:
        warnings = [str(w).replace("\n", " ") for w in report.get("warnings", [])]
        inputs = report.get("inputs", {})
        row.update({
            "t1_series": _series_label(inputs.get("t1", {})),
            "stir_series": _series_label(inputs.get("stir", {})),
            "bone_mask": inputs.get("bone_mask", {}).get("path", row["bone_mask"]),
            "reference_mask": inputs.get("reference_mask", {}).get("path", row["reference_mask"]),
            "marrow_volume_ml": report.get("marrow_volume_ml"),
            "bme_volume_ml": report.get("bme_volume_ml"),
            "extent_fraction": report.get("extent_fraction"),
            "extent_score": report.get("extent_score"),
            "scoring_scheme": report.get("scoring_scheme"),
            "n_lesions": report.get("n_lesions"),
            "registration_status": report.get("registration", {}).get("status"),
            "n_warnings": len(warnings),
            "warnings": " | ".join(warnings),
        })
        if runtime_s is None:
            row["runtime_s"] = report.get("timings_s", {}).get("total")
    return row


def _up_to_date(study_dir: Path, h: str) -> dict[str, Any] | None:
    """The study's report when it exists and carries hash ``h``; else None."""
    rp = study_dir / "report.json"
    try:
        rep = json.loads(rp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rep if isinstance(rep, dict) and rep.get("batch", {}).get("input_hash") == h else None


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Refuse a second batch writing into the same folder at the same time."""
    from ..errors import InputError

    out.mkdir(parents=True, exist_ok=True)
    fh = (out / _LOCK_NAME).open("w")
    try:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows: no lock
            pass
        except OSError:
            raise InputError(f"{out}: another bmeseg batch is writing here") from None
        yield
    finally:
        fh.close()


def _clean_stale(out: Path, ids: set[str]) -> None:
    """Remove temporary study folders an interrupted run left (``.<id>.*.tmp``, ``.<id>.old-*``)."""
    for p in out.glob(".*"):
        name = p.name[1:]
        if (p.is_dir() and (name.endswith(".tmp") or ".old-" in name)
                and any(name.startswith(f"{i}.") for i in ids)):
            log.info("removing %s left by an interrupted run", p)
            shutil.rmtree(p, ignore_errors=True)


class _Progress:
    """A tqdm bar with ETA on a terminal; plain log lines otherwise."""

    def __init__(self, total: int, enabled: bool | None) -> None:
        self.total, self.done, self.t0 = total, 0, time.perf_counter()
        self.bar: Any = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        if enabled and total:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="study", desc="bmeseg batch", dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, study_id: str, status: str, runtime_s: float) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            if status != "ok":
                self.bar.write(f"bmeseg: {study_id}: {status}")
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        log.info("[%d/%d] %s: %s in %.1f s (elapsed %s, ETA %s)", self.done, self.total, study_id, status,
                 runtime_s, _hms(elapsed), _hms(eta))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def run_batch(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    settings: Any = None,
    jobs: int | None = None,
    scheduler: Any = None,
    force: bool = False,
    progress: bool | None = None,
    command: Sequence[str] | None = None,
    masks: str | os.PathLike[str] | None = None,
) -> BatchResult:
    """Process every study under ``root`` into ``out_dir``; what ``bmeseg batch`` calls.

    Parameters
    ----------
    root : path
        Cohort folder (see :func:`~bmeseg.batch.discover_studies`).
    out_dir : path
        Receives one folder per study and the cohort tables.
    settings : PipelineSettings, optional
        Resolved settings (default: the generic preset).
    jobs : int, optional
        Local worker processes (default: one per core); ITK/BLAS threads per
        worker are cores // jobs, so the cores are never oversubscribed.
    scheduler : str or distributed.Client, optional
        Run on an existing Dask cluster instead: ``tcp://host:port``, a
        scheduler JSON file, or a Client. ``out_dir`` must be shared with the workers.
    force : bool
        Redo every study, even those whose report carries the same input hash.
    progress : bool, optional
        Progress bar (default: when stderr is a terminal); otherwise log lines.
    command : list of str, optional
        Command line recorded in ``provenance.json``.
    masks : path, optional
        CSV giving some studies a bone mask and/or a drawn normal-marrow
        reference (see :mod:`bmeseg.batch.masks`); checked whole before any study runs.

    Returns
    -------
    BatchResult
        ``n_failed`` > 0 when some studies failed (``bmeseg batch`` then exits 4).
    """
    from .. import __version__
    from ..config import load_settings
    from ..errors import InputError
    from ..report import software_versions, write_csv, write_json
    from .executors import plan_local, run_dask, run_local
    from .masks import attach_masks

    settings = settings if settings is not None else load_settings(None)
    out = Path(out_dir)
    started, t0 = _now(), time.perf_counter()
    settings_dict = {"pipeline": settings.name, **settings.to_dict()}
    result = BatchResult(out_dir=out)
    with _exclusive(out):
        disc: Discovery = discover_studies(root, exclude=[out], jobs=jobs,
                                           progress=bool(progress if progress is not None else sys.stderr.isatty()))
        tasks = list(disc.tasks)
        if not tasks and not disc.unpaired:
            raise InputError(f"{root}: no DICOM studies or NIfTI pairs found")
        if masks is not None:
            tasks = attach_masks(tasks, masks, root)
            log.info("mask table %s: masks for %d of %d studies", masks, sum(bool(t.mask_files) for t in tasks),
                     len(tasks))
        by_id = {t.study_id: t for t in tasks}
        _clean_stale(out, set(by_id))
        hashes = {t.study_id: input_hash(t, settings_dict, __version__) for t in tasks}
        rows: dict[str, dict[str, Any]] = {}
        failures: dict[str, dict[str, Any]] = {}
        todo: list[tuple[StudyTask, str]] = []
        for t in tasks:
            rep = None if force else _up_to_date(out / t.study_id, hashes[t.study_id])
            if rep is not None:
                rows[t.study_id] = cohort_row(t, "ok", report=rep, reused=True, h=hashes[t.study_id])
                log.info("%s: skipped (up to date)", t.study_id)
                result.n_reused += 1
            else:
                todo.append((t, hashes[t.study_id]))
        for sid, folder, why in disc.unpaired:
            ut = StudyTask(study_id=sid, kind="nifti", source=folder, files=())
            rows[sid] = cohort_row(ut, "failed", stage="discover", error=f"SeriesNotFoundError: {why}")
            failures[sid] = {"study_id": sid, "stage": "discover", "error_type": "SeriesNotFoundError",
                             "message": why, "source": folder}
        if result.n_reused:
            log.info("%d of %d studies up to date (skipped); %d to run", result.n_reused, len(tasks), len(todo))
        executor: dict[str, Any]
        if scheduler is not None:
            executor = {"kind": "dask", "scheduler": scheduler if isinstance(scheduler, str) else repr(scheduler)}
            outcomes = run_dask(todo, out, settings, scheduler=scheduler) if todo else iter(())
        else:
            workers, threads = plan_local(jobs, len(todo))
            executor = {"kind": "local", "workers": workers, "threads_per_worker": threads}
            log.info("running %d studies on %d worker process(es) x %d thread(s)", len(todo), workers, threads)
            outcomes = run_local(todo, out, settings, workers=workers, threads=threads) if todo else iter(())
        bar = _Progress(len(todo), progress)
        interrupted = True
        try:
            for oc in outcomes:
                _record(oc, by_id[oc.study_id], hashes[oc.study_id], rows, failures, result)
                bar.update(oc.study_id, oc.status if oc.status == "ok" else f"FAILED at {oc.stage}", oc.runtime_s)
            interrupted = False
        finally:
            bar.close()
            result.rows = [rows[k] for k in sorted(rows)]
            result.failures = [failures[k] for k in sorted(failures)]
            write_csv(result.rows, out / "cohort.csv", columns=COHORT_COLUMNS)
            write_csv(result.failures, out / "failures.csv", columns=FAILURE_COLUMNS)
            if disc.skipped:
                write_csv([{"path": str(p), "reason": why} for p, why in disc.skipped], out / "unreadable_files.csv")
            write_json({
                "software": software_versions(),
                "settings": settings_dict,
                "command": list(command) if command is not None else list(sys.argv),
                "root": str(Path(root).resolve()), "out": str(out.resolve()),
                "masks": None if masks is None else str(Path(masks).resolve()),
                "host": platform.node(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
                "executor": executor, "started": started, "ended": _now(),
                "duration_s": round(time.perf_counter() - t0, 2), "interrupted": interrupted,
                "n_studies": len(rows), "n_processed": result.n_processed, "n_reused": result.n_reused,
                "n_failed": len(failures), "n_unreadable_files": len(disc.skipped),
                "worker_peak_rss_mb": {str(k): v for k, v in sorted(result.peak_rss_mb.items())},
            }, out / "provenance.json")
    _write_review_page(out)
    log.info("batch done: %d ok (%d up to date), %d failed; tables in %s", result.n_ok, result.n_reused,
             result.n_failed, out)
    return result


def _write_review_page(out: Path) -> None:
    """The cohort review page (OUT/index.html + a page per study); a failure here never fails the batch."""
    try:
        from ..qa import write_cohort_page

        write_cohort_page(out)
    except Exception as exc:  # the tables are written; the page can be redone with `bmeseg report OUT`
        log.warning("cohort page not written (%s: %s); run `bmeseg report %s` to retry", type(exc).__name__, exc, out)


def _record(oc: StudyOutcome, task: StudyTask, h: str, rows: dict[str, dict[str, Any]],
            failures: dict[str, dict[str, Any]], result: BatchResult) -> None:
    result.n_processed += 1
    if oc.peak_rss_mb:
        result.peak_rss_mb[oc.pid] = max(result.peak_rss_mb.get(oc.pid, 0.0), oc.peak_rss_mb)
    if oc.status == "ok":
        rows[task.study_id] = cohort_row(task, "ok", report=oc.report, runtime_s=oc.runtime_s, h=h)
        return
    first_line = oc.message.splitlines()[0] if oc.message else ""
    rows[task.study_id] = cohort_row(task, "failed", runtime_s=oc.runtime_s, stage=oc.stage,
                                     error=f"{oc.error_type}: {first_line}", h=h)
    failures[task.study_id] = {"study_id": task.study_id, "stage": oc.stage, "error_type": oc.error_type,
                               "message": oc.message, "source": task.source}
    where = "" if oc.stage == "worker" else f" (see {Path(result.out_dir) / task.study_id / 'run.log'})"
    log.warning("%s failed at stage %s: %s: %s%s", task.study_id, oc.stage, oc.error_type, first_line, where)
