"""``bmeseg`` command line: parse, call the library, map errors to exit codes.

Exit codes
----------
0  success
1  unexpected error (a bug: please report it with the log)
2  bad usage or unreadable input (also: outputs exist and --force was not given)
3  no usable T1 + fat-suppressed fluid-sensitive pair (the message lists every series)
4  batch: some studies failed (see failures.csv)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_NO_PAIR, EXIT_SOME_FAILED = 0, 1, 2, 3, 4

log = logging.getLogger("bmeseg")


def _get_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="bmeseg",
        description="Find bone marrow edema on MRI from a T1 and a fat-suppressed fluid-sensitive series.",
        epilog="Exit codes: 0 ok; 1 unexpected error; 2 bad usage/input; 3 no usable T1+STIR pair; "
        "4 batch with failed studies.",
    )
    p.add_argument("--version", action="version", version=f"bmeseg {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="process one study (DICOM folder or NIfTI pair)",
                       description="Process one study. INPUT is a DICOM folder (any layout); or give "
                       "--t1 and --stir NIfTI files instead.")
    r.add_argument("input", nargs="?", type=Path, help="DICOM folder of one study")
    r.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    r.add_argument("--pipeline", default="generic", help="anatomy preset: knee, sij, hip, ankle, spine (default: generic)")
    r.add_argument("--config", type=Path, help="TOML file overriding preset settings")
    r.add_argument("--t1", help="T1 series (number, SeriesInstanceUID or description) or a NIfTI file")
    r.add_argument("--stir", help="fluid-sensitive series (number, UID or description) or a NIfTI file")
    r.add_argument("--bone-mask", type=Path, help="bone mask / label map (NIfTI) to use instead of automatic marrow search")
    r.add_argument("--reference-mask", type=Path,
                   help="normal-marrow region (NIfTI, non-zero inside) drawn by a reader: the reference BME is "
                   "measured against, instead of the automatic one (for diffuse BME, which raises it)")
    r.add_argument("--force", action="store_true", help="overwrite existing outputs")
    r.add_argument("--layout", choices=("flat", "bids"), default="flat",
                   help="output names: flat (OUT/bme_mask.nii.gz...) or bids (OUT as a BIDS-derivatives "
                   "dataset: OUT/sub-X/[ses-Y/]anat/sub-X_[ses-Y_]desc-bme_dseg.nii.gz...; NIfTI inputs)")
    _add_dicom_parsers(sub)
    _add_batch_parser(sub)
    _add_report_parser(sub)
    return p


def _add_batch_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser("batch", help="process every study under a folder (process pool or Dask cluster)",
                       description="Process every study under ROOT: DICOM studies by StudyInstanceUID wherever "
                       "their files lie, and NIfTI pairs (t1/stir, BIDS *_T1w + *_STIR). Each study goes to "
                       "OUT/<study id>/; OUT/cohort.csv, failures.csv and provenance.json sum up. Exit code 4 "
                       "when some studies failed.")
    b.add_argument("root", type=Path, help="cohort folder (searched recursively)")
    b.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    b.add_argument("-j", "--jobs", type=int, help="local worker processes (default: one per core)")
    b.add_argument("--scheduler", metavar="ADDRESS|FILE",
                   help="run on an existing Dask cluster: tcp://host:port or a scheduler JSON file "
                   "(needs the 'dask' extra; OUT must be shared with the workers)")
    b.add_argument("--pipeline", default="generic", help="anatomy preset (default: generic)")
    b.add_argument("--config", type=Path, help="TOML file overriding preset settings")
    b.add_argument("--masks", type=Path, metavar="CSV",
                   help="per-study masks: a CSV with columns study (batch id, StudyInstanceUID or NIfTI folder), "
                   "bone_mask and/or reference_mask (paths relative to the CSV), as `run --bone-mask` / "
                   "`--reference-mask`; studies not listed run automatically; checked before any study runs")
    g = b.add_mutually_exclusive_group()
    g.add_argument("--resume", dest="force", action="store_false",
                   help="skip studies already done with the same inputs and settings (default)")
    g.add_argument("--force", dest="force", action="store_true", help="redo every study")
    b.set_defaults(force=False)  # store_false alone would default to True
    b.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="plain log lines instead of a progress bar")


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_settings
    from .pipeline import StudyInput, run_study

    settings = load_settings(args.pipeline, config=args.config)
    if args.input is None and (args.t1 is None or args.stir is None):
        raise _Usage("give a DICOM folder, or both --t1 and --stir NIfTI files")
    inp = StudyInput(dicom_dir=args.input, t1=args.t1, stir=args.stir, bone_mask=args.bone_mask,
                     reference_mask=args.reference_mask)
    result = run_study(inp, args.output, settings=settings, force=args.force, layout=args.layout)
    rep = result.report
    print(
        f"bmeseg: {rep['n_lesions']} lesion(s), BME {rep['bme_volume_ml']:.2f} mL of "
        f"{rep['marrow_volume_ml']:.1f} mL marrow, {rep['scoring_scheme']} extent score "
        f"{rep['extent_score']}; registration {rep['registration'].get('status')}; outputs in {args.output}"
    )
    for w in rep["warnings"]:
        print(f"bmeseg: warning: {w}", file=sys.stderr)
    return EXIT_OK


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import run_batch
    from .config import load_settings

    if args.jobs is not None and args.jobs < 1:
        raise _Usage(f"'--jobs' must be >= 1; got {args.jobs}")
    if args.jobs is not None and args.scheduler is not None:
        raise _Usage("give --jobs or --scheduler, not both")
    settings = load_settings(args.pipeline, config=args.config)
    blog = logging.getLogger("bmeseg.batch")
    if blog.getEffectiveLevel() > logging.INFO:
        blog.setLevel(logging.INFO)  # progress lines and the summary are the point of this command
    res = run_batch(args.root, args.output, settings=settings, jobs=args.jobs, scheduler=args.scheduler,
                    force=args.force, progress=args.progress, command=["bmeseg", *args.argv], masks=args.masks)
    print(f"bmeseg: {res.n_ok} of {len(res.rows)} studies ok ({res.n_reused} up to date, skipped), "
          f"{res.n_failed} failed; cohort table in {args.output / 'cohort.csv'}")
    if res.n_failed:
        print(f"bmeseg: failed studies are listed in {args.output / 'failures.csv'}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def _add_dicom_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("discover", help="list the studies and series in a DICOM tree (headers only)",
                       description="Index INPUT (any layout, any size) from headers only and list each study's "
                       "series: number, description, plane, matrix, spacing, slices, TR/TE/TI, classification "
                       "with its reason, and the T1 + fluid-sensitive pair `run` would choose (or why none). "
                       "Exit 0 when images were found, 2 when INPUT is missing or holds no DICOM image.")
    d.add_argument("input", type=Path, help="DICOM folder (searched recursively) or file")
    d.add_argument("--json", action="store_true", help="machine-readable JSON on stdout (stable keys)")
    d.add_argument("-j", "--jobs", type=int, help="header-reading processes (default: one per core for big trees)")
    d.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (default: a bar on a terminal when tqdm is installed)")
    c = sub.add_parser("convert", help="DICOM -> one NIfTI + JSON sidecar per image series (like dcm2niix)",
                       description="Convert every image series under INPUT to OUT/<number>_<description>.nii.gz "
                       "with a JSON sidecar of the acquisition parameters (times in s, as dcm2niix). Series "
                       "that cannot be assembled are skipped with the reason.")
    c.add_argument("input", type=Path, help="DICOM folder (searched recursively) or file")
    c.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    c.add_argument("--force", action="store_true", help="overwrite existing outputs")
    c.add_argument("-j", "--jobs", type=int, help="header-reading processes")
    c.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar while indexing")


def _show_progress(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


def _cmd_discover(args: argparse.Namespace) -> int:
    import json

    from .discover import discover, format_discovery

    if args.jobs is not None and args.jobs < 1:
        raise _Usage(f"'--jobs' must be >= 1; got {args.jobs}")
    rep = discover(args.input, jobs=args.jobs, progress=_show_progress(args))
    print(json.dumps(rep, indent=2) if args.json else format_discovery(rep))
    if not rep["n_series"]:
        print(f"bmeseg: error: no DICOM image series found under {args.input} "
              f"({rep['n_files']} file(s) looked at)", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _cmd_convert(args: argparse.Namespace) -> int:
    from .io.convert import convert_dicom

    if args.jobs is not None and args.jobs < 1:
        raise _Usage(f"'--jobs' must be >= 1; got {args.jobs}")
    res = convert_dicom(args.input, args.output, overwrite=args.force, jobs=args.jobs,
                        progress=_show_progress(args))
    print(f"bmeseg: wrote {len(res.written)} series to {args.output}")
    for w in res.written:
        print(f"  {w.nifti.name}  {'x'.join(map(str, w.shape))}  {w.series}")
        for msg in w.warnings:
            print(f"    warning: {msg}")
    if res.skipped_series:
        print(f"bmeseg: skipped {len(res.skipped_series)} series:")
        for label, why in res.skipped_series:
            print(f"  {label}: {why}")
    notable = [(p, r) for p, r in res.skipped_files if not r.startswith("not a DICOM")]
    n_other = len(res.skipped_files) - len(notable)
    if res.skipped_files:
        print(f"bmeseg: skipped {len(res.skipped_files)} of {res.n_files} file(s)"
              + (f" ({n_other} not DICOM)" if n_other else ""))
        for p, r in notable:
            print(f"  {p}: {r}")
    if not res.written:
        print("bmeseg: error: no series could be converted (reasons above)", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _add_report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = sub.add_parser("report", help="write the HTML QA pages of a batch output (or one study) folder",
                       description="Write OUT/index.html: a table of every study in OUT (OUT/<study>/report.json, "
                       "plus OUT/cohort.csv and failures.csv when present) that sorts and filters, with "
                       "thumbnails and outliers highlighted, and OUT/<study>/index.html for each study. When "
                       "OUT is one study's folder, writes only its page. Static files: open them in a browser.")
    q.add_argument("output", type=Path, help="batch output folder, or one study's output folder")
    q.add_argument("--pictures", action="store_true",
                   help="draw missing QA pictures from the NIfTI outputs (needs the 'qa' extra)")


def _cmd_report(args: argparse.Namespace) -> int:
    from .qa import load_cohort, write_cohort_page, write_study_page, write_study_qa_from_outputs

    out = args.output
    if (out / "report.json").is_file():
        if args.pictures and not (out / "qa.png").is_file():
            write_study_qa_from_outputs(out)
        page = write_study_page(out, cohort_href=None)
        print(f"bmeseg: wrote {page}")
        return EXIT_OK
    rows = load_cohort(out)
    if not rows:
        raise _Usage(f"{out}: no study folders with a report.json (nor cohort.csv/failures.csv) found")
    page = write_cohort_page(out, pictures=args.pictures)
    n_flagged = sum(1 for r in rows if r["flags"])
    print(f"bmeseg: wrote {page} ({len(rows)} studies, {n_flagged} flagged)")
    return EXIT_OK


class _Usage(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bmeseg`` command; returns the exit code."""
    from .errors import BmesegError

    parser = _get_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    handlers = {"run": _cmd_run}
    handlers["report"] = _cmd_report
    handlers["discover"] = _cmd_discover
    handlers["convert"] = _cmd_convert
    handlers["batch"] = _cmd_batch
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return handlers[args.command](args)
    except _Usage as exc:
        parser.print_usage(sys.stderr)
        print(f"bmeseg: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BmesegError as exc:
        print(f"bmeseg: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bmeseg: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug: show it in full
        log.exception("unexpected error")
        return EXIT_UNEXPECTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
