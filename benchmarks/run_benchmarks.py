"""Time ``bmeseg run`` per stage on three standard study sizes, with two reference points (run on demand).

Studies (synthetic, :func:`bmeseg.synth.make_study`, cached in ``--cache``):

* ``knee``: T1 320x320x26 + STIR 256x256x26 (sagittal, 140 mm field of view);
* ``sij``: T1 and STIR 384x384x20 (``anatomy="sij"`` when :mod:`bmeseg.synth`
  offers it, otherwise a knee phantom acquired with those matrices -- the
  report says which);
* ``large``: T1 and STIR 512x512x40.

For each study, in a fresh subprocess (so memory peaks do not accumulate):
one untimed warm-up ``run_study`` (imports, caches), then ``--repeat`` timed
runs; the stage times are the ones ``run_study`` records in ``timings_s``
(index, select, load, register, marrow, edema, measure, write -- write includes
the QA pictures, tables and DICOM SEG), plus the end-to-end wall time of the
call and of the cold first run. Memory: ``ru_maxrss`` of the subprocess, its
RSS after the imports, the peak RSS of one timed run alone (VmHWM reset through
``/proc/self/clear_refs`` where the kernel allows it) and the tracemalloc peak
of one extra run (numpy and Python allocations; ITK's own buffers are not
traced).

Reference points, measured in the same run and the same way:

1. ``naive``: the straightforward SimpleITK pipeline of ``naive_pipeline.py``
   (full-resolution default Mattes MI registration, per-slice hole filling...);
2. ``dcm2niix``: conversion of the same two series to uncompressed NIfTI
   (``dcm2niix -z n``), the floor for loading (``pip install 'bmeseg[bench]'``).

Output (``--out``): ``benchmarks.json`` and ``benchmarks.md``; with
``--baseline OLD.json`` the markdown also has a before -> after table.

Usage::

    python benchmarks/run_benchmarks.py [--cache DIR] [--out DIR] [--repeat 3] [--studies knee,sij,large]
                                        [--baseline OLD/benchmarks.json] [--profile]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STAGES = ("index", "select", "load", "register", "marrow", "edema", "measure", "write", "total")
SEED = 7


# --------------------------------------------------------------------------- studies


def _specs() -> dict[str, tuple[Any, str, str]]:
    """name -> (StudySpec, pipeline preset, note)."""
    from bmeseg.synth import LesionSpec, StudySpec

    common = dict(
        motion_rot_deg=(2.0, 0.0, 1.0), motion_trans_mm=(0.0, 1.5, -1.3),
        lesions=(LesionSpec("femur", 6.0, "medial_condyle"), LesionSpec("tibia", 2.0, "lateral_plateau")),
    )
    knee = StudySpec(t1_matrix=(320, 320), fluid_matrix=(256, 256), t1_slices=26, fluid_slices=26,
                     fov_mm=140.0, **common)
    if hasattr(StudySpec, "sij_sample"):  # semicoronal SIJ study of bmeseg.synth, resized
        sij = replace(StudySpec.sij_sample(), t1_matrix=(384, 384), fluid_matrix=(384, 384), t1_slices=20,
                      fluid_slices=20)
        sij_pipe, sij_note = "sij", "synthetic SIJ (StudySpec.sij_sample() with these matrices)"
    else:
        sij = replace(knee, t1_matrix=(384, 384), fluid_matrix=(384, 384), t1_slices=20, fluid_slices=20,
                      fov_mm=150.0, slice_thickness_mm=4.0, slice_gap_mm=0.4)
        sij_pipe, sij_note = "knee", "bmeseg.synth has no 'sij' anatomy yet: knee phantom with SIJ matrices"
    large = replace(knee, t1_matrix=(512, 512), fluid_matrix=(512, 512), t1_slices=40, fluid_slices=40,
                    fov_mm=150.0, slice_thickness_mm=3.0, slice_gap_mm=0.3)
    return {
        "knee": (knee, "knee", "knee T1 320x320x26 + STIR 256x256x26"),
        "sij": (sij, sij_pipe, f"T1 + STIR 384x384x20; {sij_note}"),
        "large": (large, "knee", "knee T1 + STIR 512x512x40"),
    }


def _ensure_study(cache: Path, name: str, spec: Any) -> Path:
    from bmeseg.synth import make_study

    root = cache / name
    key = json.dumps(spec.as_dict(), sort_keys=True, default=str) + f"|seed={SEED}"
    stamp = root / "spec.json"
    if (root / "dicom").is_dir() and stamp.is_file() and stamp.read_text() == key:
        return root / "dicom"
    t0 = time.perf_counter()
    make_study(root, spec, seed=SEED, overwrite=True)
    stamp.write_text(key)
    print(f"  generated {name} in {time.perf_counter() - t0:.1f} s", flush=True)
    return root / "dicom"


def _pair_folders(dicom: Path, work: Path) -> tuple[list[Path], int, int]:
    """Folders holding exactly the T1 and the fluid series (symlink folders if needed), and voxel counts."""
    from bmeseg.io.dicom import index_dicom
    from bmeseg.series import choose_pair

    idx = index_dicom(dicom)
    pair = choose_pair(idx.series, source=str(dicom))
    out = []
    for role, s in (("t1", pair.t1), ("stir", pair.fluid)):
        files = [Path(f) for f in s.files]
        parents = {f.parent for f in files}
        if len(parents) == 1 and len([p for p in next(iter(parents)).iterdir() if p.is_file()]) == len(files):
            out.append(next(iter(parents)))
            continue
        d = work / f"_{role}_files"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for f in files:
            (d / f.name).symlink_to(f.resolve())
        out.append(d)
    def voxels(si: Any) -> int:
        return int((si.rows or 0) * (si.columns or 0) * si.n_slices)

    return out, voxels(pair.t1), voxels(pair.fluid)


# --------------------------------------------------------------------------- workers (subprocesses)


def _rss_mb(field: str = "VmRSS") -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker_bmeseg(dicom: str, pipeline: str, repeat: int, profile: str | None) -> dict[str, Any]:
    import gc
    import tracemalloc

    t_imp = time.perf_counter()
    from bmeseg.config import load_settings
    from bmeseg.pipeline import StudyInput, run_study

    import_s = time.perf_counter() - t_imp
    rss_import = _rss_mb()
    settings = load_settings(pipeline)
    out = Path(tempfile.mkdtemp(prefix="bmeseg-bench-"))
    inp = StudyInput(dicom_dir=Path(dicom))
    try:
        t = time.perf_counter()
        r = run_study(inp, out / "o", settings=settings, force=True)
        cold = time.perf_counter() - t
        runs = []
        hwm_reset = False
        run_peak = None
        for i in range(repeat):
            gc.collect()
            if i == 0:
                hwm_reset = _reset_hwm()
                base = _rss_mb()
            t = time.perf_counter()
            r = run_study(inp, out / "o", settings=settings, force=True)
            wall = time.perf_counter() - t
            if i == 0 and hwm_reset:
                hwm = _rss_mb("VmHWM")
                run_peak = None if hwm is None or base is None else {"rss_before_mb": base, "hwm_mb": hwm}
            runs.append({**r.timings_s, "wall": wall})
        gc.collect()
        tracemalloc.start()
        run_study(inp, out / "o", settings=settings, force=True)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        prof_txt = None
        if profile:
            import cProfile
            import io
            import pstats

            pr = cProfile.Profile()
            pr.enable()
            run_study(inp, out / "o", settings=settings, force=True)
            pr.disable()
            pr.dump_stats(profile)
            s = io.StringIO()
            pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(45)
            prof_txt = s.getvalue()
            Path(profile).with_suffix(".txt").write_text(prof_txt)
        return {
            "runs": runs, "cold_wall": cold, "import_s": import_s, "rss_import_mb": rss_import,
            "maxrss_mb": _maxrss_mb(), "run_peak": run_peak, "tracemalloc_peak_mb": traced_peak / 2**20,
            "registration": {k: r.registration.get(k) for k in ("status", "rotation_deg", "translation_mm",
                                                                 "iterations")},
            "n_lesions": len(r.measurements.lesions) if hasattr(r.measurements, "lesions") else None,
            "shapes": {"t1": list(r.t1.shape), "stir": list(r.stir.shape)},
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _worker_naive(dicom: str, repeat: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import naive_pipeline

    rss_import = _rss_mb()
    out = Path(tempfile.mkdtemp(prefix="naive-bench-"))
    try:
        runs = [naive_pipeline.run(dicom, out) for _ in range(repeat)]
        return {"runs": runs, "rss_import_mb": rss_import, "maxrss_mb": _maxrss_mb()}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _subprocess(args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _dcm2niix(folders: list[Path], repeat: int) -> dict[str, Any] | None:
    exe = shutil.which("dcm2niix")
    if exe is None:
        return None
    times = []
    version = subprocess.run([exe, "-v"], capture_output=True, text=True).stdout.strip().splitlines()
    for _ in range(repeat):
        out = Path(tempfile.mkdtemp(prefix="dcm2niix-bench-"))
        try:
            t = time.perf_counter()
            for f in folders:
                subprocess.run([exe, "-z", "n", "-o", str(out), str(f)], capture_output=True, check=True)
            times.append(time.perf_counter() - t)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return {"runs": times, "version": version[-1] if version else "?"}


def _cli_help(repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bmeseg.cli", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return times


# --------------------------------------------------------------------------- summary


def _stats(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)} if xs else {}


def _summarise(raw: dict[str, Any]) -> dict[str, Any]:
    b = raw["bmeseg"]
    stages = {k: _stats([r.get(k, 0.0) for r in b["runs"]]) for k in (*STAGES, "wall")}
    s: dict[str, Any] = {"stages": stages}
    s["loading"] = _stats([r.get("index", 0) + r.get("select", 0) + r.get("load", 0) for r in b["runs"]])
    if raw.get("naive"):
        s["naive"] = {k: _stats([r[k] for r in raw["naive"]["runs"]]) for k in raw["naive"]["runs"][0]}
        s["ratio_vs_naive"] = stages["wall"]["median"] / s["naive"]["total"]["median"]
        s["ratio_vs_naive_without_write"] = (stages["wall"]["median"] - stages["write"]["median"]) / (
            s["naive"]["total"]["median"] - s["naive"]["write"]["median"])
    if raw.get("dcm2niix"):
        s["dcm2niix"] = _stats(raw["dcm2niix"]["runs"])
        s["ratio_load_vs_dcm2niix"] = s["loading"]["median"] / s["dcm2niix"]["median"]
    f32_mb = 4.0 * (raw["voxels_t1"] + raw["voxels_stir"]) / 2**20
    s["inputs_float32_mb"] = f32_mb
    rp = b.get("run_peak")
    s["run_peak_rss_mb"] = (rp["hwm_mb"] - rp["rss_before_mb"]) if rp else None
    s["peak_over_import_mb"] = b["maxrss_mb"] - (b["rss_import_mb"] or 0.0)
    s["memory_ratio_rss"] = s["peak_over_import_mb"] / f32_mb
    s["memory_ratio_traced"] = b["tracemalloc_peak_mb"] / f32_mb
    return s


def _fmt(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _markdown(res: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    L: list[str] = []
    m = res["machine"]
    L.append(f"# bmeseg benchmarks ({res['label'] or 'unlabelled'})\n")
    L.append(f"{res['date']}; {m['python']}; {m['cpus']} CPUs; load average before/after: "
             f"{m['loadavg_before']} / {m['loadavg_after']}; repeat {res['repeat']} (naive x{res['ref_repeat']}); "
             f"`bmeseg --help` {_fmt(res['cli_help_s']['median'])} s (median)\n")
    names = list(res["studies"])
    L.append("## Stage times, s: median (min-max)\n")
    L.append("| stage | " + " | ".join(names) + " |")
    L.append("|---|" + "---|" * len(names))
    for st in (*STAGES, "wall"):
        row = []
        for n in names:
            x = res["studies"][n]["summary"]["stages"][st]
            row.append(f"{x['median']:.3f} ({x['min']:.3f}-{x['max']:.3f})")
        L.append(f"| {st} | " + " | ".join(row) + " |")
    L.append("| cold first run (wall) | " + " | ".join(
        _fmt(res["studies"][n]["raw"]["bmeseg"]["cold_wall"]) for n in names) + " |")
    L.append("\n## Reference points and targets\n")
    L.append("| | " + " | ".join(names) + " | target |")
    L.append("|---|" + "---|" * len(names) + "---|")

    def row(label: str, f: Any, target: str = "") -> None:
        vals = []
        for n in names:
            try:
                vals.append(f(res["studies"][n]["summary"]))
            except (KeyError, TypeError):
                vals.append("-")
        L.append(f"| {label} | " + " | ".join(vals) + f" | {target} |")

    row("naive SimpleITK pipeline total, s", lambda s: _fmt(s["naive"]["total"]["median"]))
    row("... of which registration, s", lambda s: _fmt(s["naive"]["register"]["median"]))
    row("bmeseg wall / naive", lambda s: _fmt(s["ratio_vs_naive"]), "<= 0.5")
    row("same without writing (bmeseg writes QA/SEG/CSV too)", lambda s: _fmt(s["ratio_vs_naive_without_write"]))
    row("dcm2niix -z n (2 series), s", lambda s: _fmt(s["dcm2niix"]["median"]))
    row("bmeseg index+select+load, s", lambda s: _fmt(s["loading"]["median"]))
    row("bmeseg loading / dcm2niix", lambda s: _fmt(s["ratio_load_vs_dcm2niix"]), "<= 3")
    row("inputs as float32, MB", lambda s: _fmt(s["inputs_float32_mb"], 1))
    row("peak RSS over post-import RSS, MB", lambda s: _fmt(s["peak_over_import_mb"], 0))
    row("... / inputs", lambda s: _fmt(s["memory_ratio_rss"], 1), "<= 10")
    row("peak RSS of one warm run, MB", lambda s: _fmt(s["run_peak_rss_mb"], 0))
    row("tracemalloc peak / inputs", lambda s: _fmt(s["memory_ratio_traced"], 1), "<= 10")
    L.append("| ru_maxrss (whole subprocess), MB | " + " | ".join(
        _fmt(res["studies"][n]["raw"]["bmeseg"]["maxrss_mb"], 0) for n in names) + " | |")
    L.append("| naive ru_maxrss, MB | " + " | ".join(
        _fmt((res["studies"][n]["raw"].get("naive") or {}).get("maxrss_mb"), 0) for n in names) + " | |")
    sc = res.get("scaling")
    if sc:
        L.append("\n## Cost vs voxel count (log-log slope of median time vs T1+STIR voxels; 1 = linear)\n")
        L.append("| stage | " + " | ".join(f"{n} us/voxel" for n in names) + " | slope |")
        L.append("|---|" + "---|" * len(names) + "---|")
        for st, v in sc.items():
            L.append(f"| {st} | " + " | ".join(_fmt(u, 3) for u in v["us_per_voxel"]) + f" | {_fmt(v['slope'])} |")
    if baseline:
        L.append(f"\n## Before ({baseline.get('label')}, {baseline.get('date')}) -> after, median s\n")
        L.append("| stage | " + " | ".join(names) + " |")
        L.append("|---|" + "---|" * len(names))
        for st in (*STAGES, "wall"):
            cells = []
            for n in names:
                try:
                    a = baseline["studies"][n]["summary"]["stages"][st]["median"]
                    b = res["studies"][n]["summary"]["stages"][st]["median"]
                    cells.append(f"{a:.3f} -> {b:.3f}")
                except KeyError:
                    cells.append("-")
            L.append(f"| {st} | " + " | ".join(cells) + " |")
    notes = [f"- {n}: {res['studies'][n]['note']}" for n in names]
    L.append("\n## Studies\n\n" + "\n".join(notes))
    return "\n".join(L) + "\n"


def _scaling(res: dict[str, Any]) -> dict[str, Any]:
    names = list(res["studies"])
    if len(names) < 2:
        return {}
    vox = [res["studies"][n]["voxels_t1"] + res["studies"][n]["voxels_stir"] for n in names]
    out = {}
    for st in (*STAGES, "wall"):
        t = [res["studies"][n]["summary"]["stages"][st]["median"] for n in names]
        if min(t) <= 0:
            continue
        lx = [math.log(v) for v in vox]
        ly = [math.log(x) for x in t]
        mx, my = statistics.mean(lx), statistics.mean(ly)
        den = sum((a - mx) ** 2 for a in lx)
        slope = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / den if den else float("nan")
        out[st] = {"slope": slope, "us_per_voxel": [1e6 * a / v for a, v in zip(t, vox, strict=True)]}
    return out


# --------------------------------------------------------------------------- main


def _get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=None, help="study cache folder (default: a temp dir)")
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="where to write benchmarks.{json,md}")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per study (default 3)")
    p.add_argument("--ref-repeat", type=int, default=None,
                   help="runs of the naive pipeline and dcm2niix (default: --repeat)")
    p.add_argument("--studies", default="knee,sij,large", help="comma-separated subset of knee,sij,large")
    p.add_argument("--no-naive", action="store_true", help="skip the naive SimpleITK reference")
    p.add_argument("--label", default="", help="a name for this run (e.g. a commit)")
    p.add_argument("--baseline", type=Path, default=None, help="an earlier benchmarks.json to compare with")
    p.add_argument("--profile", action="store_true", help="also write a cProfile of one run per study")
    p.add_argument("--_worker", nargs=4, metavar=("KIND", "DICOM", "PIPELINE", "PROFILE"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _get_parser().parse_args(argv)
    if args._worker:
        kind, dicom, pipeline, profile = args._worker
        res = (_worker_bmeseg(dicom, pipeline, args.repeat, profile if profile != "-" else None)
               if kind == "bmeseg" else _worker_naive(dicom, args.repeat))
        print(json.dumps(res))
        return 0

    ref_repeat = args.ref_repeat or args.repeat
    cache = args.cache or Path(tempfile.mkdtemp(prefix="bmeseg-bench-cache-"))
    cache.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    specs = _specs()
    wanted = [s.strip() for s in args.studies.split(",") if s.strip()]
    res: dict[str, Any] = {
        "label": args.label, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "repeat": args.repeat,
        "ref_repeat": ref_repeat,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "loadavg_before": " ".join(Path("/proc/loadavg").read_text().split()[:3])},
        "studies": {},
    }
    res["cli_help_s"] = _stats(_cli_help(max(3, args.repeat)))
    for name in wanted:
        spec, pipeline, note = specs[name]
        print(f"[{name}] {note}", flush=True)
        dicom = _ensure_study(cache, name, spec)
        folders, n1, n2 = _pair_folders(dicom, cache / name)
        raw: dict[str, Any] = {"voxels_t1": n1, "voxels_stir": n2}
        prof = str((args.out / f"profile_{name}.pstats").resolve()) if args.profile else "-"
        raw["bmeseg"] = _subprocess(["--repeat", str(args.repeat), "--_worker", "bmeseg", str(dicom), pipeline, prof])
        print(f"  bmeseg median wall {statistics.median(r['wall'] for r in raw['bmeseg']['runs']):.2f} s",
              flush=True)
        raw["dcm2niix"] = _dcm2niix(folders, ref_repeat)
        if not args.no_naive:
            raw["naive"] = _subprocess(["--repeat", str(ref_repeat), "--_worker", "naive", str(dicom), "-", "-"])
            print(f"  naive median total {statistics.median(r['total'] for r in raw['naive']['runs']):.2f} s",
                  flush=True)
        res["studies"][name] = {"note": note, "pipeline": pipeline, "voxels_t1": n1, "voxels_stir": n2,
                                "raw": raw, "summary": _summarise(raw)}
    res["machine"]["loadavg_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    res["scaling"] = _scaling(res)
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    (args.out / "benchmarks.json").write_text(json.dumps(res, indent=1))
    md = _markdown(res, baseline)
    (args.out / "benchmarks.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
