"""DICOM SEG: reads back with highdicom, references the STIR series, frames sit where the NIfTI mask is."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bmeseg.io.dicom import index_dicom, load_series
from bmeseg.io.dicom_write import MRAcquisition, new_uid, write_dicom_series
from bmeseg.io.nifti import write_nifti
from bmeseg.volume import Geometry, Volume

hd = pytest.importorskip("highdicom")

STIR = MRAcquisition(series_number=3, series_description="stir_tse_sag", repetition_time_ms=4000.0,
                     echo_time_ms=40.0, inversion_time_ms=150.0, scanning_sequence="IR")


def _oblique(shape: tuple[int, int, int] = (48, 40, 14)) -> Geometry:
    """Sagittal-ish series tilted 12 degrees, unequal spacing."""
    a = np.deg2rad(12.0)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    d = rot @ np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    return Geometry(shape, (0.9, 1.2, 3.0), (40.0, -30.0, 60.0), d)


def _series(tmp: Path, geom: Geometry) -> Volume:
    rng = np.random.default_rng(0)
    img = Volume(rng.uniform(50, 500, geom.shape).astype(np.float32), geom)
    write_dicom_series(img, tmp / "stir", STIR, study_uid=new_uid(), frame_of_reference_uid=new_uid(),
                       file_names=[f"z{n:02d}" for n in rng.permutation(geom.shape[2])])
    info = index_dicom(tmp / "stir").series[0]
    return load_series(info).replace_meta(files=[str(f) for f in info.files])


def _seg_points(seg: object) -> dict[int, np.ndarray]:
    """LPS (mm) of every SEG pixel that is on, per segment number, from the frames' own geometry."""
    shared = seg.SharedFunctionalGroupsSequence[0]  # type: ignore[attr-defined]
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    ps = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    pix = seg.pixel_array  # type: ignore[attr-defined]
    pix = pix if pix.ndim == 3 else pix[None]
    out: dict[int, list[np.ndarray]] = {}
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):  # type: ignore[attr-defined]
        ipp = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        r, c = np.nonzero(pix[f])
        pts = ipp + c[:, None] * ps[1] * iop[:3] + r[:, None] * ps[0] * iop[3:]
        sid = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence  # 1 segment: shared
        out.setdefault(int(sid[0].ReferencedSegmentNumber), []).append(pts)
    return {k: np.concatenate(v) for k, v in out.items()}


def _nifti_points(path: Path, value: int | None = None) -> np.ndarray:
    img = nib.load(str(path))
    lab = np.asarray(img.dataobj)
    ijk = np.argwhere(lab > 0 if value is None else lab == value)
    return nib.affines.apply_affine(img.affine, ijk) * np.array([-1.0, -1.0, 1.0])  # RAS -> LPS


def _same_points(a: np.ndarray, b: np.ndarray, tol: float = 1e-3) -> bool:
    ka = sorted(map(tuple, np.round(a / tol).astype(np.int64)))
    kb = sorted(map(tuple, np.round(b / tol).astype(np.int64)))
    return len(ka) == len(kb) and bool(np.max(np.abs(np.array(ka) - np.array(kb)), initial=0) <= 2)


def test_seg_per_bone_matches_nifti_and_references_series(tmp_path: Path) -> None:
    from bmeseg.io.seg import read_seg_labelmap, write_seg

    stir = _series(tmp_path, _oblique())
    g = stir.geometry
    lesions = np.zeros(g.shape, np.uint8)
    lesions[5:12, 4:9, 2:5] = 1
    lesions[30:36, 25:33, 8:10] = 2
    lesions[40:42, 1:3, 12] = 3  # outside marrow
    bones = np.zeros(g.shape, np.int32)
    bones[:24, :, :12] = 1
    bones[24:, :, :12] = 2
    write_nifti(Volume(lesions, g), tmp_path / "bme_mask.nii.gz")
    out = write_seg(lesions, bones, {1: "femur", 2: "tibia"}, g, stir.meta["files"], tmp_path / "bme_seg.dcm")
    seg = hd.seg.segread(str(out))
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == stir.meta["series_instance_uid"]
    assert seg.FrameOfReferenceUID == stir.meta["frame_of_reference_uid"]
    assert seg.StudyInstanceUID == stir.meta["study_instance_uid"]
    segs = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert [segs[k].SegmentLabel for k in sorted(segs)] == ["BME femur", "BME tibia", "BME outside marrow"]
    for k in (1, 2, 3):
        assert segs[k].SegmentedPropertyTypeCodeSequence[0].CodeValue == "79654002"  # SCT Edema
        assert segs[k].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert segs[1].AnatomicRegionSequence[0].CodeValue == "71341001"  # femur
    assert segs[2].AnatomicRegionSequence[0].CodeValue == "12611008"  # tibia
    assert "AnatomicRegionSequence" not in segs[3]
    # every frame is linked to the STIR image at its position
    sop_uids = {str(ds.SOPInstanceUID) for ds in map(_read_header, stir.meta["files"])}
    for item in seg.PerFrameFunctionalGroupsSequence:
        src = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert src.ReferencedSOPInstanceUID in sop_uids
    # same patient coordinates as the NIfTI mask, pixel for pixel
    pts = _seg_points(seg)
    nifti_all = _nifti_points(tmp_path / "bme_mask.nii.gz")
    assert _same_points(np.concatenate(list(pts.values())), nifti_all)
    assert _same_points(pts[1], g.index_to_lps(np.argwhere((lesions > 0) & (bones == 1))))
    assert np.array_equal(read_seg_labelmap(out, g) > 0, lesions > 0)


def _read_header(path: str) -> object:
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True)


def test_seg_per_lesion(tmp_path: Path) -> None:
    from bmeseg.io.seg import read_seg_labelmap, write_seg

    stir = _series(tmp_path, _oblique((30, 26, 8)))
    lesions = np.zeros(stir.shape, np.uint8)
    lesions[3:6, 3:6, 1:3] = 1
    lesions[20:25, 10:15, 5:7] = 2
    out = write_seg(lesions, np.zeros(stir.shape, np.int32), {}, stir.geometry, stir.meta["files"],
                    tmp_path / "s.dcm", segments="lesion", lesion_bones={1: "patella", 2: "tibia"})
    seg = hd.seg.segread(str(out))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["BME lesion 1 patella", "BME lesion 2 tibia"]
    assert seg.SegmentSequence[0].AnatomicRegionSequence[0].CodeMeaning == "Patella"
    assert np.array_equal(read_seg_labelmap(out, stir.geometry), lesions)


def test_missing_highdicom_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from bmeseg.errors import MissingDependencyError
    from bmeseg.io import seg as segmod

    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(MissingDependencyError, match=r"bmeseg\[seg\]"):
        segmod._hd()


def test_run_writes_seg_tables_and_report(tmp_path: Path) -> None:
    from bmeseg.cli import main

    from .conftest import tiny_pair

    t1, stir, truth = tiny_pair(seed=3)
    study, fr = new_uid(), new_uid()
    t1_acq = MRAcquisition(series_number=2, series_description="t1_tse_cor", repetition_time_ms=550.0,
                           echo_time_ms=12.0, scanning_sequence="SE")
    write_dicom_series(t1, tmp_path / "d" / "t1", t1_acq, study_uid=study, frame_of_reference_uid=fr)
    write_dicom_series(stir, tmp_path / "d" / "stir", STIR, study_uid=study, frame_of_reference_uid=fr)
    out = tmp_path / "o"
    assert main(["run", str(tmp_path / "d"), "-o", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["n_lesions"] >= 1 and "regions" in rep and rep["scores"]["scheme"] == rep["scoring_scheme"]
    seg = hd.seg.segread(str(out / "bme_seg.dcm"))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == rep["inputs"]["stir"]["series_instance_uid"]
    assert _same_points(np.concatenate(list(_seg_points(seg).values())), _nifti_points(out / "bme_mask.nii.gz"))
    with (out / "lesions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["id"]) for r in rows] == [les["id"] for les in rep["lesions"]]
    c = [float(rows[0][f"centroid_{a}_mm"]) for a in "xyz"]
    assert np.allclose(c, rep["lesions"][0]["centroid_lps_mm"], atol=0.01)
    true_c = truth.geometry.index_to_lps(np.argwhere(truth.array).mean(0))
    assert np.linalg.norm(np.asarray(c) - true_c) < 5.0
    with (out / "bones.csv").open() as fh:
        brows = list(csv.DictReader(fh))
    assert {r["region"] for r in brows} >= {"all"} and all(r["scheme"] == rep["scoring_scheme"] for r in brows)
