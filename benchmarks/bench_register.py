"""Time :func:`bmeseg.register.register_rigid` on a clinical-size pair (run on demand, not a test).

A 320x320x26 coronal T1 (0.44 mm pixels, 3 mm slices) with a known motion is
registered to a 256x256x26 sagittal STIR (0.55 mm pixels, 3.5 mm slices), both
sampled from the synthetic phantom of ``tests/test_register.py``.

Usage::

    python benchmarks/bench_register.py [--runs 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_register as ph  # phantom helpers live with the tests

from bmeseg.register import RegistrationSettings, register_rigid


def _get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="timed runs (default 5)")
    p.add_argument("--threads", type=int, default=1, help="ITK threads (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _get_parser().parse_args(argv)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(args.threads)
    settings = RegistrationSettings(n_threads=args.threads)

    t0 = time.perf_counter()
    phantom = ph._make_phantom()
    stir_geom = ph._centered_geometry((256, 256, 26), (0.55, 0.55, 3.5), ph._direction((0, 1, 0), (0, 0, -1)))
    t1_geom = ph._centered_geometry((320, 320, 26), (0.44, 0.44, 3.0), ph._direction((1, 0, 0), (0, 0, -1)))
    motion = ph._Motion(ph._rot(2, 3.0), np.array([5.0, -3.0, 2.0]), np.array([2.0, -1.5, 1.0]))
    stir = ph._sample(phantom, stir_geom, ph._STIR_LUT, ph.IDENTITY, seed=2)
    t1 = ph._sample(phantom, t1_geom, ph._T1_LUT, motion, seed=3)
    print(f"built phantom pair in {time.perf_counter() - t0:.1f} s: T1 {t1.shape} -> STIR {stir.shape}, "
          f"{args.threads} thread(s)")

    register_rigid(stir, t1, settings=settings)  # warm-up
    times = []
    result = None
    for _ in range(args.runs):
        t = time.perf_counter()
        result = register_rigid(stir, t1, settings=settings)
        times.append(time.perf_counter() - t)
    assert result is not None
    pts = stir_geom.index_to_lps(np.argwhere(np.ones(stir_geom.shape))[::101].astype(float))
    err = float(np.max(np.linalg.norm(result.apply(pts) - motion.apply(pts), axis=1)))
    print(f"register_rigid x{args.runs}: median {statistics.median(times):.2f} s, "
          f"min {min(times):.2f} s, max {max(times):.2f} s")
    print(f"status {result.status}, {result.iterations} iterations, max point error {err:.2f} mm")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
