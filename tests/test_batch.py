"""``bmeseg batch`` in-process through main([...]): discovery, failure isolation, resume, Dask."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmeseg.batch import StudyTask, discover_studies, input_hash, sanitize_id
from bmeseg.cli import main
from bmeseg.io.dicom_write import MRAcquisition, new_uid, write_dicom_series
from bmeseg.io.nifti import write_nifti

from .conftest import tiny_pair

T1_ACQ = MRAcquisition("t1_tse_cor", 2, repetition_time_ms=550.0, echo_time_ms=11.0)
STIR_ACQ = MRAcquisition("tirm_cor", 3, repetition_time_ms=4200.0, echo_time_ms=35.0,
                         inversion_time_ms=150.0, scanning_sequence="SE\\IR", scan_options="IR")
SMALL = (64, 56, 20)  # voxels (tiny_pair's default): about a second per study


def _dicom_study(root: Path, n: int, *, t1_dir: str, stir_dir: str | None) -> None:
    """Study ``P<n>``: T1 and STIR written into the given folders (``stir_dir`` None: T1 only)."""
    t1, stir, _ = tiny_pair(seed=n, shape=SMALL)
    study, fr = new_uid(f"study{n}"), new_uid(f"for{n}")
    names = [f"p{n}_{k:03d}" for k in range(SMALL[2])]  # unique: studies may share a folder
    write_dicom_series(t1, root / t1_dir, T1_ACQ, study_uid=study, frame_of_reference_uid=fr,
                       patient_id=f"P{n}", uid_seed=f"t1-{n}", file_names=names)
    if stir_dir is not None:
        write_dicom_series(stir, root / stir_dir, STIR_ACQ, study_uid=study, frame_of_reference_uid=fr,
                           patient_id=f"P{n}", uid_seed=f"stir-{n}")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two good DICOM studies whose series share folders, a truncated one, a T1-only one, a BIDS pair."""
    root = tmp_path_factory.mktemp("cohort")
    _dicom_study(root, 1, t1_dir="scanner/t1", stir_dir="scanner/stir")
    _dicom_study(root, 2, t1_dir="scanner/t1", stir_dir="late/P2")  # T1 files mixed with study 1's
    _dicom_study(root, 3, t1_dir="broken/t1", stir_dir="broken/stir")
    for f in sorted((root / "broken" / "stir").iterdir())[5:8]:  # truncate three middle slices
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
    _dicom_study(root, 4, t1_dir="t1only", stir_dir=None)
    t1, stir, _ = tiny_pair(seed=5, shape=SMALL)
    anat = root / "bids" / "sub-01" / "ses-1" / "anat"
    write_nifti(t1, anat / "sub-01_ses-1_T1w.nii.gz")
    write_nifti(stir, anat / "sub-01_ses-1_acq-stir_T2w.nii.gz")
    (root / "README.txt").write_text("not an image")
    return root


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _by_patient(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {r["patient_id"] or r["study_id"]: r for r in rows}


def test_discovery_groups_by_study_uid_and_pairs_nifti(cohort: Path) -> None:
    disc = discover_studies(cohort, jobs=1)
    kinds = sorted((t.kind, t.patient_id or t.study_id) for t in disc.tasks)
    assert kinds == [("dicom", "P1"), ("dicom", "P2"), ("dicom", "P3"), ("dicom", "P4"), ("nifti", "sub-01_ses-1")]
    by = {t.patient_id or t.study_id: t for t in disc.tasks}
    # study 2's T1 lies in the folder of study 1's T1: grouped by UID, not by folder
    assert {f.parent.name for f in by["P2"].files} == {"t1", "P2"}
    assert all(s.study_instance_uid == by["P2"].study_instance_uid for s in by["P2"].series)
    assert by["sub-01_ses-1"].stir_path is not None and by["sub-01_ses-1"].stir_path.name.endswith("acq-stir_T2w.nii.gz")
    assert len(disc.skipped) == 3 and any("unreadable" in n for n in by["P3"].notes)
    assert by["P1"].study_id.startswith("P1_20260101_") and len({t.study_id for t in disc.tasks}) == 5
    # ids are stable between runs
    assert [t.study_id for t in discover_studies(cohort, jobs=1).tasks] == [t.study_id for t in disc.tasks]


def test_sanitize_id() -> None:
    assert sanitize_id("Doe^John / 12") == "Doe-John-12"
    assert sanitize_id("..") == "study"


def test_input_hash_tracks_files_and_settings(tmp_path: Path) -> None:
    f = tmp_path / "a.nii.gz"
    f.write_bytes(b"x")
    task = StudyTask(study_id="s", kind="nifti", source=str(tmp_path), files=(f,))
    h = input_hash(task, {"edema": {"k": 1}}, "0.1")
    assert h == input_hash(task, {"edema": {"k": 1}}, "0.1")
    assert h != input_hash(task, {"edema": {"k": 2}}, "0.1")
    assert h != input_hash(task, {"edema": {"k": 1}}, "0.2")
    f.write_bytes(b"xy")
    assert h != input_hash(task, {"edema": {"k": 1}}, "0.1")


def test_batch_failures_resume_and_settings_change(cohort: Path, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["batch", str(cohort), "-o", str(out), "--jobs", "2", "--no-progress"]) == 4

    rows = _by_patient(_csv(out / "cohort.csv"))
    assert set(rows) == {"P1", "P2", "P3", "P4", "sub-01_ses-1"}
    # the cohort review page is written at the end of the batch, one row per study
    page = (out / "index.html").read_text()
    assert all(r["study_id"] in page for r in rows.values())
    for good in ("P1", "P2", "sub-01_ses-1"):
        r = rows[good]
        assert r["status"] == "ok" and r["reused"] == "False", r
        assert float(r["marrow_volume_ml"]) > 1 and float(r["bme_volume_ml"]) > 0
        assert r["registration_status"] in ("ok", "suspicious") and r["extent_score"] != ""
        d = out / r["study_id"]
        for name in ("bme_mask.nii.gz", "marrow_mask.nii.gz", "stir.nii.gz", "t1_registered.nii.gz",
                     "report.json", "run.log"):
            assert (d / name).is_file(), (good, name)
        rep = json.loads((d / "report.json").read_text())
        assert rep["batch"]["input_hash"] == r["input_hash"] and rep["batch"]["study_id"] == r["study_id"]
    assert rows["P1"]["t1_series"] == "2: t1_tse_cor" and rows["P1"]["stir_series"] == "3: tirm_cor"

    fails = {r["study_id"]: r for r in _csv(out / "failures.csv")}
    assert set(fails) == {rows["P3"]["study_id"], rows["P4"]["study_id"]}
    p3, p4 = fails[rows["P3"]["study_id"]], fails[rows["P4"]["study_id"]]
    assert (p3["stage"], p3["error_type"]) == ("load", "GeometryError") and "missing slice" in p3["message"]
    assert (p4["stage"], p4["error_type"]) == ("select", "SeriesNotFoundError")
    assert "no fat-suppressed fluid-sensitive series" in p4["message"]
    assert rows["P3"]["status"] == "failed" and rows["P3"]["failure_stage"] == "load"
    # a failed study leaves a complete record (log + failure.json), never a half-written output folder
    assert "truncated" in (out / p3["study_id"] / "run.log").read_text()
    assert not (out / p3["study_id"] / "report.json").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["executor"] == {"kind": "local", "workers": 2, "threads_per_worker": 1}
    assert prov["n_failed"] == 2 and prov["settings"]["edema"]["stir_min_ratio"] > 0
    assert prov["command"][:2] == ["bmeseg", "batch"] and prov["started"] <= prov["ended"]

    # re-run: the good studies are skipped (outputs untouched), the failed ones retried
    good_report = out / rows["P1"]["study_id"] / "report.json"
    mtime = good_report.stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="bmeseg.batch")
    assert main(["batch", str(cohort), "-o", str(out), "--jobs", "1", "--no-progress"]) == 4
    assert good_report.stat().st_mtime_ns == mtime
    assert f"{rows['P1']['study_id']}: skipped (up to date)" in caplog.text
    rows2 = _by_patient(_csv(out / "cohort.csv"))
    assert rows2["P1"]["reused"] == "True" and rows2["P1"]["bme_volume_ml"] == rows["P1"]["bme_volume_ml"]
    assert rows2["P3"]["status"] == "failed"

    # a changed edema setting redoes every study
    cfg = tmp_path / "strict.toml"
    cfg.write_text("[edema]\nstir_min_ratio = 1.6\n")
    assert main(["batch", str(cohort), "-o", str(out), "--jobs", "1", "--no-progress", "--config", str(cfg)]) == 4
    assert good_report.stat().st_mtime_ns != mtime
    rows3 = _by_patient(_csv(out / "cohort.csv"))
    assert rows3["P1"]["reused"] == "False" and rows3["P1"]["input_hash"] != rows["P1"]["input_hash"]
    assert json.loads(good_report.read_text())["parameters"]["edema"]["stir_min_ratio"] == 1.6


def test_batch_all_good_exits_0_out_inside_root_and_bad_usage(cohort: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    for sub in ("scanner", "late"):
        shutil.copytree(cohort / sub, root / sub)
    out = root / "derivatives" / "bmeseg"  # outputs (NIfTI, DICOM SEG) inside ROOT are not taken as inputs
    assert main(["batch", str(root), "-o", str(out), "--jobs", "2", "--no-progress"]) == 0
    rows = _csv(out / "cohort.csv")
    stale = out / f".{rows[0]['study_id']}.k1ll3d.tmp"  # what a killed run leaves: hidden, then removed
    (stale / ".bmeseg-x").mkdir(parents=True)
    assert main(["batch", str(root), "-o", str(out), "--no-progress"]) == 0
    rows = _csv(out / "cohort.csv")
    assert len(rows) == 2 and all(r["reused"] == "True" for r in rows)
    assert not stale.exists()
    assert main(["batch", str(root), "-o", str(tmp_path / "o"), "--jobs", "0"]) == 2
    assert main(["batch", str(tmp_path / "missing"), "-o", str(tmp_path / "o2")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["batch", str(empty), "-o", str(tmp_path / "o3")]) == 2


def test_unpaired_nifti_is_a_failure(tmp_path: Path) -> None:
    t1, _stir, _ = tiny_pair(seed=2, shape=SMALL)
    write_nifti(t1, tmp_path / "in" / "knee07" / "t1.nii.gz")
    out = tmp_path / "out"
    assert main(["batch", str(tmp_path / "in"), "-o", str(out), "--no-progress"]) == 4
    (row,) = _csv(out / "failures.csv")
    assert row["study_id"] == "knee07" and row["stage"] == "discover" and "only a T1" in row["message"]


def test_scheduler_file_missing_is_usage_error(cohort: Path, tmp_path: Path) -> None:
    assert main(["batch", str(cohort / "bids"), "-o", str(tmp_path / "o"), "--scheduler",
                 str(tmp_path / "nope.json")]) == 2


@pytest.fixture
def restore_process_state() -> Iterator[None]:
    """An in-process Dask worker sets this process' thread limits and log level: undo them afterwards."""
    import SimpleITK as sitk

    from bmeseg.batch.worker import THREAD_ENV_VARS

    env = {var: os.environ.get(var) for var in THREAD_ENV_VARS}
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    level = logging.getLogger("bmeseg").level
    yield
    for var, val in env.items():
        if val is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = val
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    logging.getLogger("bmeseg").setLevel(level)


@pytest.mark.usefixtures("restore_process_state")
def test_dask_cluster_gives_same_cohort_as_local_pool(cohort: Path, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    root = tmp_path / "root"
    for sub in ("scanner", "late", "bids"):
        shutil.copytree(cohort / sub, root / sub)
    local, dask_out = tmp_path / "local", tmp_path / "dask"
    assert main(["batch", str(root), "-o", str(local), "--jobs", "2", "--no-progress"]) == 0
    # a real scheduler and worker, in-process (inproc:// comms) to keep it quick
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        assert main(["batch", str(root), "-o", str(dask_out), "--scheduler", cluster.scheduler_address,
                     "--no-progress"]) == 0
    a, b = _csv(local / "cohort.csv"), _csv(dask_out / "cohort.csv")
    assert [r["study_id"] for r in a] == [r["study_id"] for r in b] and len(a) == 3
    for ra, rb in zip(a, b, strict=True):
        for key in ("marrow_volume_ml", "bme_volume_ml", "extent_score", "n_lesions", "input_hash"):
            assert ra[key] == rb[key], (ra["study_id"], key)
        assert rb["status"] == "ok"
    prov = json.loads((dask_out / "provenance.json").read_text())
    assert prov["executor"]["kind"] == "dask"
    assert prov["executor"]["scheduler"].split("://")[0] in ("inproc", "tcp")


def test_mask_table_gives_studies_their_masks_and_is_checked_before_anything_runs(
        cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--masks``: studies named by StudyInstanceUID or NIfTI folder get their drawn reference / bone mask,
    others run automatically; a changed mask redoes only its study; a bad table fails whole, naming lines."""
    import numpy as np

    from bmeseg.volume import Volume

    root = tmp_path / "root"
    for sub in ("scanner", "late", "bids", "broken"):
        shutil.copytree(cohort / sub, root / sub)
    tasks = {t.patient_id or t.study_id: t for t in discover_studies(root, jobs=1).tasks}
    masks = tmp_path / "masks"
    refs = {}
    for name, seed in (("P1", 1), ("sub", 5)):
        _, _, truth = tiny_pair(seed=seed, shape=SMALL)
        ref = np.zeros(SMALL, np.uint8)
        ref[33:39, 20:26, 6:10] = 1  # fatty marrow on the far side of the bone from the lesion
        assert not (ref.astype(bool) & truth.array).any()
        refs[name] = write_nifti(Volume(ref, truth.geometry), masks / f"{name}_normal.nii.gz")
    bone = np.zeros(SMALL, np.uint8)
    bone[20:44, 16:40, 3:17] = 1  # a box around the one bone (label 1)
    _, _, truth5 = tiny_pair(seed=5, shape=SMALL)
    write_nifti(Volume(bone, truth5.geometry), masks / "sub_bones.nii.gz")
    table = masks / "masks.csv"
    table.write_text("study,bone_mask,reference_mask\n"
                     f"{tasks['P1'].study_instance_uid},,P1_normal.nii.gz\n"
                     "bids/sub-01/ses-1/anat,sub_bones.nii.gz,sub_normal.nii.gz\n"
                     f"{tasks['P3'].study_id},,P1_normal.nii.gz\n")
    out = tmp_path / "out"
    assert main(["batch", str(root), "-o", str(out), "--jobs", "2", "--no-progress", "--masks", str(table)]) == 4
    rows = _by_patient(_csv(out / "cohort.csv"))
    # P3 (truncated slices) fails at loading; its row still says which mask it was given
    assert rows["P3"]["status"] == "failed" and rows["P3"]["reference_mask"] == str(masks / "P1_normal.nii.gz")
    assert rows["P1"]["reference_mask"] == str(masks / "P1_normal.nii.gz") and rows["P1"]["bone_mask"] == ""
    assert rows["P2"]["reference_mask"] == "" and rows["P2"]["bone_mask"] == ""
    assert rows["sub-01_ses-1"]["bone_mask"] == str(masks / "sub_bones.nii.gz")
    for who in ("P1", "P2", "sub-01_ses-1"):
        rep = json.loads((out / rows[who]["study_id"] / "report.json").read_text())
        assert rep["n_lesions"] == 1, who
        assert ("reference_mask" in rep["inputs"]) == (who != "P2")
        assert rep["reference"]["edema_thresholds"]["reference_drawn"] == (who != "P2")
    rep = json.loads((out / rows["sub-01_ses-1"]["study_id"] / "report.json").read_text())
    assert rep["inputs"]["bone_mask"] == {"path": str(masks / "sub_bones.nii.gz"), "labels": [1],
                                          "voxels": int(bone.sum())}
    assert rep["inputs"]["reference_mask"]["voxels"] == 6 * 6 * 4
    assert json.loads((out / "provenance.json").read_text())["masks"] == str(table.resolve())

    # a redrawn reference redoes that study only
    os.utime(refs["sub"], ns=(1, 1))
    assert main(["batch", str(root), "-o", str(out), "--no-progress", "--masks", str(table)]) == 4
    rows2 = _by_patient(_csv(out / "cohort.csv"))
    assert [rows2[w]["reused"] for w in ("P1", "P2", "sub-01_ses-1")] == ["True", "True", "False"]
    # dropping the table redoes the studies that had masks
    assert main(["batch", str(root), "-o", str(out), "--no-progress"]) == 4
    rows3 = _by_patient(_csv(out / "cohort.csv"))
    assert [rows3[w]["reused"] for w in ("P1", "P2", "sub-01_ses-1")] == ["False", "True", "False"]
    assert rows3["P1"]["reference_mask"] == ""

    # a bad table: every problem named with its line, and no study runs
    bad = masks / "bad.csv"
    bad.write_text("study,reference_mask\n"
                   "nobody,P1_normal.nii.gz\n"
                   f"{rows['P2']['study_id']},missing.nii.gz\n"
                   f"{tasks['P1'].study_instance_uid},P1_normal.nii.gz\n"
                   f"{rows['P1']['study_id']},P1_normal.nii.gz\n")
    out2 = tmp_path / "out2"
    capsys.readouterr()
    assert main(["batch", str(root), "-o", str(out2), "--no-progress", "--masks", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv: 3 problem(s)" in err and "line 2: study 'nobody'" in err
    assert "line 3: reference_mask" in err and "missing.nii.gz" in err and "already given masks on line 4" in err
    assert [p.name for p in out2.iterdir()] == [".bmeseg-batch.lock"]  # no study folder, no tables
    (masks / "cols.csv").write_text("study,t2_mask\nx,y\n")
    assert main(["batch", str(root), "-o", str(out2), "--no-progress", "--masks", str(masks / "cols.csv")]) == 2
    assert "unknown: t2_mask" in capsys.readouterr().err
    assert main(["batch", str(root), "-o", str(out2), "--no-progress", "--masks", str(masks / "none.csv")]) == 2
    assert "none.csv: mask table not found" in capsys.readouterr().err
    assert [p.name for p in out2.iterdir()] == [".bmeseg-batch.lock"]
