"""Cohort throughput of ``bmeseg batch``: studies per minute and peak memory per worker.

Generates N small synthetic studies (``bmeseg.synth.make_study`` with
``StudySpec.tiny()``; falls back to the test phantom written as DICOM when the
synth package is absent), then runs the same cohort

* on a local pool with 1 worker, and with 2 workers (``--jobs``),
* through a Dask ``LocalCluster`` (2 worker processes x 1 thread) via ``--scheduler``,

each with ``force`` so every study is processed. Wall time includes discovery
(one header index of the whole tree) and worker start-up; ``steady`` is the
throughput from the first finished study to the last (start-up excluded).
Peak memory is each worker process' peak resident set size (``ru_maxrss``). ``CPU s/study``
(local pools: this process plus its reaped workers) does not depend on what else runs on the machine:
``cores x 60 / CPU s`` is the throughput an otherwise idle machine would allow.

Usage::

    python benchmarks/batch_throughput.py [--n 8] [--data DIR] [--no-dask] [--pipeline knee]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_cohort(root: Path, n: int, *, seed: int = 0) -> str:
    """Write ``n`` studies under ``root/study_XXX`` (kept between runs); returns the generator used."""
    try:
        from bmeseg.synth import StudySpec, make_study
    except ImportError:
        make_study = None  # type: ignore[assignment]
    for i in range(n):
        d = root / f"study_{i:03d}"
        if (d / "dicom").is_dir():
            continue
        if make_study is not None:
            make_study(d, StudySpec.tiny(), seed=seed + i)
        else:  # pragma: no cover - only without bmeseg.synth
            _phantom_study(d / "dicom", seed + i)
    return "bmeseg.synth.make_study(StudySpec.tiny())" if make_study is not None else "tests.conftest.tiny_pair"


def _phantom_study(d: Path, seed: int) -> None:
    from bmeseg.io.dicom_write import MRAcquisition, new_uid, write_dicom_series
    from tests.conftest import tiny_pair

    t1, stir, _ = tiny_pair(seed=seed)
    study, fr = new_uid(f"bench-study-{seed}"), new_uid(f"bench-for-{seed}")
    write_dicom_series(t1, d / "t1", MRAcquisition("t1_tse_cor", 2, repetition_time_ms=550.0, echo_time_ms=11.0),
                       study_uid=study, frame_of_reference_uid=fr, patient_id=f"B{seed}")
    write_dicom_series(stir, d / "stir", MRAcquisition("tirm_cor", 3, repetition_time_ms=4200.0, echo_time_ms=35.0,
                       inversion_time_ms=150.0, scanning_sequence="SE\\IR", scan_options="IR"),
                       study_uid=study, frame_of_reference_uid=fr, patient_id=f"B{seed}")


class _Timer(logging.Handler):
    """Notes when the first and last study finished (from the batch progress log lines)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("["):
            self.times.append(time.perf_counter())


def run_once(root: Path, out: Path, settings: Any, **kw: Any) -> dict[str, Any]:
    import resource

    from bmeseg.batch import run_batch

    cpu0 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    timer = _Timer()
    lg = logging.getLogger("bmeseg.batch.core")
    lg.addHandler(timer)
    lg.setLevel(logging.INFO)
    lg.propagate = False  # the table is the output
    t0 = time.perf_counter()
    try:
        res = run_batch(root, out, settings=settings, force=True, progress=False, **kw)
    finally:
        lg.removeHandler(timer)
    wall = time.perf_counter() - t0
    cpu1 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    # CPU seconds of this process and of the (reaped) local worker processes: a load-independent cost
    cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(cpu0, cpu1, strict=True))
    n = len(res.rows)
    steady = (n - 1) / (timer.times[-1] - timer.times[0]) * 60 if len(timer.times) > 1 else float("nan")
    rss = sorted(res.peak_rss_mb.values())
    return {"n": n, "ok": res.n_ok, "failed": res.n_failed, "wall_s": wall, "per_min": n / wall * 60,
            "steady_per_min": steady, "workers": len(rss), "rss_mb": rss,
            "cpu_s_per_study": cpu / n if "scheduler" not in kw else float("nan")}


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="number of studies (default 8)")
    ap.add_argument("--data", type=Path, help="cohort folder (kept; default: a temporary folder)")
    ap.add_argument("--pipeline", default="knee")
    ap.add_argument("--no-dask", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from bmeseg.config import load_settings

    settings = load_settings(args.pipeline)
    with tempfile.TemporaryDirectory(prefix="bmeseg-bench-") as tmp:
        root = args.data or Path(tmp) / "cohort"
        t0 = time.perf_counter()
        gen = make_cohort(root, args.n)
        n_dirs = len(list(root.glob("study_*")))
        print(f"cohort: {n_dirs} studies from {gen} in {root} ({time.perf_counter() - t0:.0f} s to make)")
        print(f"machine: {os.cpu_count()} CPUs, load average {_load()} before; pipeline {args.pipeline}")
        results: list[tuple[str, dict[str, Any]]] = []
        for jobs in (1, 2):
            results.append((f"local --jobs {jobs}", run_once(root, Path(tmp) / f"out{jobs}", settings, jobs=jobs)))
        if not args.no_dask:
            try:
                from distributed import LocalCluster
            except ImportError:
                print("dask: distributed not installed; skipped")
            else:
                logging.getLogger("distributed").setLevel(logging.ERROR)  # after import: it configures itself
                with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1", silence_logs=logging.ERROR) as cluster:
                    results.append(("dask LocalCluster 2x1", run_once(root, Path(tmp) / "outdask", settings,
                                                                        scheduler=cluster.scheduler_address)))
    print()
    print(f"{'executor':<24} {'studies':>7} {'failed':>6} {'wall s':>7} {'studies/min':>11} "
          f"{'steady/min':>10} {'CPU s/study':>11}  peak RSS per worker (MB)")
    for name, r in results:
        print(f"{name:<24} {r['n']:>7} {r['failed']:>6} {r['wall_s']:>7.1f} {r['per_min']:>11.1f} "
              f"{r['steady_per_min']:>10.1f} {r['cpu_s_per_study']:>11.2f}  "
              f"{', '.join(f'{v:.0f}' for v in r['rss_mb'])}")
    base = results[0][1]["per_min"]
    for name, r in results[1:]:
        print(f"speed-up {name} vs 1 worker: x{r['per_min'] / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
