"""Write the demo study (``StudySpec.sample()``, seed 20260101) to ``sample_data/knee_demo``.

Usage::

    python sample_data/make_sample.py [OUT_DIR]
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from bmeseg.synth import StudySpec, make_study

SEED = 20260101
DEFAULT_OUT = Path(__file__).resolve().parent / "knee_demo"


def _get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help="output directory (replaced)")
    p.add_argument("--seed", type=int, default=SEED)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.out.exists():
        shutil.rmtree(args.out)
    truth = make_study(args.out, StudySpec.sample(), seed=args.seed)
    logging.info("lesions: %s", ", ".join(f"{les.bone} {les.location} {les.volume_ml:.2f} mL" for les in truth.lesions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
