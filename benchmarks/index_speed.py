"""How fast ``bmeseg discover`` indexes a big DICOM tree (headers only), serial and in worker processes.

Generates a seeded synthetic tree in a temporary folder -- by default 10,000 files: small
64x64 MR images in many studies and series (patient/study/series nesting, some series
split across folders, file names without extensions), plus junk (text, .DS_Store, NIfTI,
truncated copies, a DICOMDIR) -- then times :func:`bmeseg.io.dicom.index_dicom` with
``jobs=1`` and ``jobs=2`` and the full :func:`bmeseg.discover.discover` (index + classify +
pair choice). The files have just been written, so the OS page cache is warm: the figures
are header-parsing speed, not disk speed.

Run on demand (it is not a test)::

    python benchmarks/index_speed.py            # 10,000 files
    python benchmarks/index_speed.py --files 2000 --keep /tmp/tree
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bmeseg.io.dicom_write import MRAcquisition, new_uid, write_dicom_series
from bmeseg.volume import Geometry, Volume

_ACQS = [
    ("localizer", dict(repetition_time_ms=8.0, echo_time_ms=4.0, scanning_sequence="GR")),
    ("t1_tse_cor", dict(repetition_time_ms=550.0, echo_time_ms=11.0)),
    ("tirm_cor", dict(repetition_time_ms=4200.0, echo_time_ms=35.0, inversion_time_ms=150.0,
                      scanning_sequence="SE\\IR", scan_options="IR")),
    ("pd_fs_sag", dict(repetition_time_ms=3000.0, echo_time_ms=30.0, scan_options="FS")),
    ("t2_tse_ax", dict(repetition_time_ms=4000.0, echo_time_ms=90.0)),
    ("t1_se_sag", dict(repetition_time_ms=500.0, echo_time_ms=12.0)),
]
_SLICES = 24
_JUNK_EVERY = 5  # one junk file per this many series


def _junk(folder: Path, kind: int, donor: Path) -> None:
    if kind == 0:
        (folder / "notes.txt").write_text("exported by PACS\n")
    elif kind == 1:
        (folder / ".DS_Store").write_bytes(b"\x00\x01junk" * 50)
    elif kind == 2:
        (folder / "image.nii").write_bytes(b"\x00" * 348)
    elif kind == 3:  # a truncated copy of a slice
        data = donor.read_bytes()
        (folder / "cut.dcm").write_bytes(data[: len(data) // 2])
    else:
        _dicomdir(folder / "DICOMDIR")


def _dicomdir(path: Path) -> None:
    """An (empty) media directory file, as on CDs exported by PACS."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = new_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.FileSetID = "BENCH"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = Sequence([])
    ds.save_as(str(path), enforce_file_format=True)


def make_tree(root: Path, n_files: int, *, seed: int = 0) -> dict[str, int]:
    """Write exactly ``n_files`` files under ``root``; returns counts (images, junk, series, studies)."""
    rng = np.random.default_rng(seed)
    direction = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    base = rng.uniform(0, 1000, (64, 64, _SLICES)).astype(np.float32)
    n_series = max(1, int(n_files / (_SLICES + 1 / _JUNK_EVERY)))
    images = junk = series = studies = 0
    donor: Path | None = None
    while series < n_series:
        studies += 1
        study, frame = new_uid(f"bench-study-{seed}-{studies}"), new_uid(f"bench-for-{seed}-{studies}")
        patient = root / f"patient{studies % 17:02d}" / f"study_{studies:04d}"
        for number, (name, acq_kw) in enumerate(_ACQS, start=1):
            if series >= n_series:
                break
            series += 1
            geom = Geometry((64, 64, _SLICES), (0.8, 0.8, 3.0), (-25.0, float(series % 50), 20.0), direction)
            acq = MRAcquisition(name, number, **acq_kw)  # type: ignore[arg-type]
            names = [f"{rng.integers(1 << 40):010x}" for _ in range(_SLICES)]  # no extensions
            out = patient / f"s{series:05d}"
            files = write_dicom_series(Volume(base * (series % 5 + 1), geom), out, acq, study_uid=study,
                                       frame_of_reference_uid=frame, file_names=names,
                                       uid_seed=f"bench{seed}")
            donor = files[0]
            if series % 7 == 0:  # split over two folders, as some PACS exports do
                (patient / "extra").mkdir(exist_ok=True)
                for f in files[_SLICES // 2 :]:
                    f.rename(patient / "extra" / f.name)
            images += _SLICES
            if series % _JUNK_EVERY == 0:
                junk += 1
                _junk(out, junk % 5, donor)
    assert donor is not None
    extra = root / "misc"
    while images + junk < n_files:  # top up with junk to the exact count
        junk += 1
        folder = extra / f"j{junk:05d}"
        folder.mkdir(parents=True)
        _junk(folder, junk % 5, donor)
    return {"files": images + junk, "images": images, "junk": junk, "series": series, "studies": studies}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=10_000, help="about this many files (default 10000)")
    p.add_argument("--keep", type=Path, help="write the tree here and keep it (default: a temp folder)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from bmeseg.discover import discover
    from bmeseg.io.dicom import index_dicom

    logging.getLogger("bmeseg").setLevel(logging.ERROR)  # the junk files' "skipping" warnings

    tmp = Path(tempfile.mkdtemp(prefix="bmeseg-bench-")) if args.keep is None else args.keep
    try:
        t0 = time.perf_counter()
        counts = make_tree(tmp, args.files, seed=args.seed)
        t_make = time.perf_counter() - t0
        results: dict[str, object] = {"tree": counts, "make_s": round(t_make, 1)}
        for jobs in (1, 2):
            t0 = time.perf_counter()
            idx = index_dicom(tmp, jobs=jobs)
            dt = time.perf_counter() - t0
            results[f"index_jobs{jobs}"] = {
                "files": idx.n_files, "series": len(idx.series), "skipped": len(idx.skipped),
                "seconds": round(dt, 2), "files_per_s": round(idx.n_files / dt),
            }
        t0 = time.perf_counter()
        rep = discover(tmp)  # default jobs: one per core (at most 8) for big trees
        dt = time.perf_counter() - t0
        results["discover_default_jobs"] = {
            "files": rep["n_files"], "series": rep["n_series"], "studies": rep["n_studies"],
            "pairs": sum(st["pair"] is not None for st in rep["studies"]),
            "seconds": round(dt, 2), "files_per_s": round(rep["n_files"] / dt),
        }
        print(json.dumps(results, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
