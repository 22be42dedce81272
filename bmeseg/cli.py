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
    r.add_argument("--force", action="store_true", help="overwrite existing outputs")
    return p


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_settings
    from .pipeline import StudyInput, run_study

    settings = load_settings(args.pipeline, config=args.config)
    if args.input is None and (args.t1 is None or args.stir is None):
        raise _Usage("give a DICOM folder, or both --t1 and --stir NIfTI files")
    inp = StudyInput(dicom_dir=args.input, t1=args.t1, stir=args.stir, bone_mask=args.bone_mask)
    result = run_study(inp, args.output, settings=settings, force=args.force)
    rep = result.report
    print(
        f"bmeseg: {rep['n_lesions']} lesion(s), BME {rep['bme_volume_ml']:.2f} mL of "
        f"{rep['marrow_volume_ml']:.1f} mL marrow, {rep['scoring_scheme']} extent score "
        f"{rep['extent_score']}; registration {rep['registration'].get('status')}; outputs in {args.output}"
    )
    for w in rep["warnings"]:
        print(f"bmeseg: warning: {w}", file=sys.stderr)
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
