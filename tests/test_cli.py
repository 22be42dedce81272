"""The CLI end to end, in-process through main([...]), and every exit code."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from bmeseg.cli import main
from bmeseg.io.dicom_write import MRAcquisition, new_uid, write_dicom_series
from bmeseg.io.nifti import write_nifti
from bmeseg.pipeline import OUTPUT_FILES

from .conftest import tiny_pair

T1_ACQ = MRAcquisition("t1_tse_cor", 2, repetition_time_ms=550.0, echo_time_ms=11.0)
STIR_ACQ = MRAcquisition("tirm_cor", 3, repetition_time_ms=4200.0, echo_time_ms=35.0,
                         inversion_time_ms=150.0, scanning_sequence="SE\\IR", scan_options="IR")


@pytest.fixture(scope="module")
def nifti_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    d = tmp_path_factory.mktemp("nifti")
    t1, stir, truth = tiny_pair()
    return write_nifti(t1, d / "t1.nii.gz"), write_nifti(stir, d / "stir.nii.gz"), truth


@pytest.fixture(scope="module")
def dicom_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    d = tmp_path_factory.mktemp("dicom")
    t1, stir, truth = tiny_pair(seed=1)
    study, fr = new_uid(), new_uid()
    write_dicom_series(t1, d / "a" / "b", T1_ACQ, study_uid=study, frame_of_reference_uid=fr)
    names = [f"x{n:03d}" for n in np.random.default_rng(0).permutation(stir.shape[2])]
    write_dicom_series(stir, d / "c", STIR_ACQ, study_uid=study, frame_of_reference_uid=fr, file_names=names)
    (d / "notes.txt").write_text("not dicom")
    return d, truth


def test_run_nifti_pair_end_to_end(tmp_path: Path, nifti_pair: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    t1p, stirp, truth = nifti_pair
    out = tmp_path / "out"
    assert main(["run", "--t1", str(t1p), "--stir", str(stirp), "-o", str(out)]) == 0
    for name in OUTPUT_FILES:
        if name != "bme_seg.dcm":  # DICOM SEG only for DICOM input (a warning says so)
            assert (out / name).is_file(), name
    assert not (out / "bme_seg.dcm").exists()
    rep = json.loads((out / "report.json").read_text())
    assert any("DICOM SEG not written" in w for w in rep["warnings"])
    for key in ("schema_version", "software", "inputs", "registration", "marrow_volume_ml", "bme_volume_ml",
                "extent_fraction", "extent_score", "scoring_scheme", "lesions", "parameters", "timings_s", "warnings"):
        assert key in rep, key
    assert rep["inputs"]["t1"]["path"] == str(t1p)
    assert rep["registration"]["status"] in ("ok", "suspicious")
    assert len(rep["lesions"]) == 1 and rep["lesions"][0]["id"] == 1
    # the lesion sits at the same world position in the mask read by nibabel and by SimpleITK
    img = nib.load(str(out / "bme_mask.nii.gz"))
    lab = np.asarray(img.dataobj)
    assert lab.dtype == np.uint8 and set(np.unique(lab)) == {0, 1}
    ijk = np.argwhere(lab == 1).mean(0)
    ras = nib.affines.apply_affine(img.affine, ijk)
    lps_nib = ras * np.array([-1, -1, 1])
    simg = sitk.ReadImage(str(out / "bme_mask.nii.gz"))
    arr = sitk.GetArrayFromImage(simg)  # [k, j, i]
    kji = np.argwhere(arr == 1).mean(0)
    lps_sitk = np.array(simg.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in kji[::-1])))
    assert np.allclose(lps_nib, lps_sitk, atol=1e-3)
    assert np.allclose(lps_nib, rep["lesions"][0]["centroid_lps_mm"], atol=0.05)
    true_c = truth.geometry.index_to_lps(np.argwhere(truth.array).mean(0))
    assert np.linalg.norm(lps_nib - true_c) < 3.0
    assert "1 lesion(s)" in capsys.readouterr().out


def test_run_dicom_folder_end_to_end(tmp_path: Path, dicom_study: tuple) -> None:
    d, truth = dicom_study
    out = tmp_path / "o"
    assert main(["run", str(d), "-o", str(out), "--pipeline", "knee"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["inputs"]["t1"]["series_description"] == "t1_tse_cor"
    assert rep["inputs"]["stir"]["series_number"] == 3
    assert rep["inputs"]["stir"]["classification"] == "stir"
    assert rep["parameters"]["pipeline"] == "knee"
    img = nib.load(str(out / "bme_mask.nii.gz"))
    # the mask's grid covers the STIR's voxels in world space (the loader may order slices
    # along +normal, so compare the corner positions as sets, not the affines)
    def corners(aff: np.ndarray, shape: tuple) -> np.ndarray:
        c = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
        return np.array(sorted(map(tuple, np.round(nib.affines.apply_affine(aff, c), 3))))

    assert np.allclose(corners(img.affine, img.shape), corners(truth.geometry.affine_ras, truth.shape), atol=1e-3)
    assert rep["bme_volume_ml"] > 0.3
    assert (out / "bme_seg.dcm").is_file() and (out / "lesions.csv").is_file() and (out / "bones.csv").is_file()
    # explicit series choice by description and number gives the same pair
    out2 = tmp_path / "o2"
    assert main(["run", str(d), "-o", str(out2), "--t1", "t1_tse_cor", "--stir", "3"]) == 0


def test_outputs_not_overwritten_without_force(tmp_path: Path, nifti_pair: tuple,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    t1p, stirp, _ = nifti_pair
    out = tmp_path / "out"
    args = ["run", "--t1", str(t1p), "--stir", str(stirp), "-o", str(out)]
    assert main(args) == 0
    before = (out / "report.json").stat().st_mtime_ns
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "report.json").stat().st_mtime_ns == before
    assert main([*args, "--force"]) == 0


def test_run_with_a_drawn_reference(tmp_path: Path, nifti_pair: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    """``--reference-mask``: a reader's normal-marrow region replaces the automatic reference. The lesion is
    still found, report.json names the region, and an empty region is refused naming its file."""
    from bmeseg.io.nifti import read_nifti
    from bmeseg.volume import Volume

    t1p, stirp, truth = nifti_pair
    ref = np.zeros(truth.shape, bool)
    ref[33:39, 20:26, 6:10] = True  # fatty marrow on the far side of the bone from the lesion
    assert not (ref & truth.array).any()
    refp = write_nifti(Volume(ref.astype(np.uint8), truth.geometry), tmp_path / "normal.nii.gz")
    stir = read_nifti(stirp).array
    assert np.median(stir[ref]) < 120  # it is marrow (STIR ~80), not muscle (300)
    out = tmp_path / "out"
    assert main(["run", "--t1", str(t1p), "--stir", str(stirp), "-o", str(out), "--reference-mask", str(refp)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["inputs"]["reference_mask"] == {"path": str(refp), "voxels": int(ref.sum()),
                                               "ml": round(float(ref.sum() * truth.geometry.voxel_volume_ml), 3)}
    assert len(rep["lesions"]) == 1
    lab = np.asarray(nib.load(str(out / "bme_mask.nii.gz")).dataobj) > 0
    assert 2 * (lab & truth.array).sum() / (lab.sum() + truth.array.sum()) > 0.7
    empty = write_nifti(Volume(np.zeros(truth.shape, np.uint8), truth.geometry), tmp_path / "empty.nii.gz")
    out2 = tmp_path / "out2"
    capsys.readouterr()
    assert main(["run", "--t1", str(t1p), "--stir", str(stirp), "-o", str(out2), "--reference-mask", str(empty)]) == 2
    assert "empty.nii.gz" in capsys.readouterr().err
    assert not out2.exists()


def test_masks_drawn_on_another_grid_are_resampled(tmp_path: Path, nifti_pair: tuple) -> None:
    """``--bone-mask`` and ``--reference-mask`` on a grid of their own (2x coarser in-plane, same place):
    both are put on the fluid-sensitive grid by nearest neighbour, and the lesion is still found."""
    from bmeseg.volume import Geometry, Volume

    t1p, stirp, truth = nifti_pair
    g = truth.geometry
    coarse = Geometry((g.shape[0] // 2, g.shape[1] // 2, g.shape[2]),
                      (2 * g.spacing_mm[0], 2 * g.spacing_mm[1], g.spacing_mm[2]),
                      tuple(g.index_to_lps([0.5, 0.5, 0.0])), g.direction)
    centre = np.array([(n - 1) / 2 for n in g.shape])
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in coarse.shape], indexing="ij"), -1).astype(float)
    d = coarse.index_to_lps(ijk) - g.index_to_lps(centre)  # mm from the bone's centre
    bone = (d[..., 0] / 10) ** 2 + (d[..., 1] / 12) ** 2 + (d[..., 2] / 22) ** 2 < 1  # inside its marrow
    ref = bone & (d[..., 0] > 2) & (d[..., 1] < -2) & (d[..., 2] < -6)  # away from the lesion (+4, +6, +6 mm)
    bp = write_nifti(Volume(bone.astype(np.uint8), coarse), tmp_path / "bone.nii.gz")
    rp = write_nifti(Volume(ref.astype(np.uint8), coarse), tmp_path / "normal.nii.gz")
    out = tmp_path / "out"
    assert main(["run", "--t1", str(t1p), "--stir", str(stirp), "-o", str(out), "--bone-mask", str(bp),
                 "--reference-mask", str(rp)]) == 0
    rep = json.loads((out / "report.json").read_text())
    marrow = np.asarray(nib.load(str(out / "marrow_mask.nii.gz")).dataobj) > 0
    assert marrow.shape == g.shape
    assert 0.5 * bone.sum() * 4 < marrow.sum() <= 1.2 * bone.sum() * 4  # 4 fine voxels per coarse one
    assert rep["inputs"]["reference_mask"]["voxels"] == 4 * ref.sum()  # each coarse voxel covers 2 x 2 fine ones
    assert len(rep["lesions"]) == 1
    lab = np.asarray(nib.load(str(out / "bme_mask.nii.gz")).dataobj) > 0
    assert 2 * (lab & truth.array).sum() / (lab.sum() + truth.array.sum()) > 0.6


def test_exit_2_on_bad_input(tmp_path: Path, nifti_pair: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    t1p, _, _ = nifti_pair
    out = tmp_path / "out"
    assert main(["run", "--t1", str(t1p), "--stir", str(tmp_path / "missing.nii.gz"), "-o", str(out)]) == 2
    assert "missing.nii.gz" in capsys.readouterr().err
    assert not out.exists()  # nothing half-written
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    assert main(["run", "--t1", str(t1p), "--stir", str(bad), "-o", str(out)]) == 2
    assert "bad.nii.gz" in capsys.readouterr().err
    assert main(["run", "-o", str(out)]) == 2  # neither folder nor pair
    assert main(["frobnicate"]) == 2
    assert not out.exists()


def test_exit_2_on_bad_setting(tmp_path: Path, nifti_pair: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    t1p, stirp, _ = nifti_pair
    cfg = tmp_path / "c.toml"
    cfg.write_text("[edema]\nstir_tukey_k = 'high'\n")
    assert main(["run", "--t1", str(t1p), "--stir", str(stirp), "-o", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "edema.stir_tukey_k" in capsys.readouterr().err
    assert main(["run", "--t1", str(t1p), "--stir", str(stirp), "-o", str(tmp_path / "o"), "--pipeline", "elbow"]) == 2
    assert "elbow" in capsys.readouterr().err


def test_exit_3_when_no_fluid_sensitive_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t1, _, _ = tiny_pair(seed=2)
    study, fr = new_uid(), new_uid()
    write_dicom_series(t1, tmp_path / "in" / "t1", T1_ACQ, study_uid=study, frame_of_reference_uid=fr)
    pd = MRAcquisition("pd_tse_cor", 5, repetition_time_ms=3000.0, echo_time_ms=30.0)
    write_dicom_series(t1, tmp_path / "in" / "pd", pd, study_uid=study, frame_of_reference_uid=fr)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "in"), "-o", str(out)]) == 3
    err = capsys.readouterr().err
    assert "t1_tse_cor" in err and "pd_tse_cor" in err and "without fat suppression" in err
    assert not out.exists()


def test_exit_1_on_unexpected_error(tmp_path: Path, nifti_pair: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    # a bug inside a stage (not a bmeseg error) must give exit 1 and leave no outputs
    import bmeseg.pipeline as pl

    def broken(*a: object, **k: object) -> None:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(pl, "detect", broken)
    t1p, stirp, _ = nifti_pair
    out = tmp_path / "out"
    assert main(["run", "--t1", str(t1p), "--stir", str(stirp), "-o", str(out)]) == 1
    assert not any(out.glob("*.nii.gz")) if out.exists() else True


def test_outputs_are_readable_by_others(tmp_path: Path, nifti_pair: tuple) -> None:
    # atomic writes go through mkstemp (0600); finished files must carry the usual umask permissions
    import os
    import stat

    t1p, stirp, _ = nifti_pair
    out = tmp_path / "out"
    assert main(["run", "--t1", str(t1p), "--stir", str(stirp), "-o", str(out)]) == 0
    mask = os.umask(0)
    os.umask(mask)
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f.name


def test_force_removes_outputs_the_new_run_does_not_make(tmp_path: Path, nifti_pair: tuple) -> None:
    t1p, stirp, _ = nifti_pair
    out = tmp_path / "out"
    out.mkdir()
    stale = out / "bme_seg.dcm"  # as if left by an earlier DICOM run with BME
    stale.write_bytes(b"old")
    assert main(["run", "--t1", str(t1p), "--stir", str(stirp), "-o", str(out)]) == 2  # not without --force
    assert stale.read_bytes() == b"old"
    assert main(["run", "--t1", str(t1p), "--stir", str(stirp), "-o", str(out), "--force"]) == 0
    assert not stale.exists()  # NIfTI input writes no SEG: the old one must not pass for this run's


def test_bids_layout(tmp_path: Path) -> None:
    t1, stir, _ = tiny_pair(seed=4)
    src = tmp_path / "bids" / "sub-07" / "ses-b" / "anat"
    t1p = write_nifti(t1, src / "sub-07_ses-b_T1w.nii.gz")
    stirp = write_nifti(stir, src / "sub-07_ses-b_STIR.nii.gz")
    out = tmp_path / "derivatives" / "bmeseg"
    assert main(["run", "--t1", str(t1p), "--stir", str(stirp), "-o", str(out), "--layout", "bids"]) == 0
    anat = out / "sub-07" / "ses-b" / "anat"
    rep = json.loads((anat / "sub-07_ses-b_desc-bmeseg_report.json").read_text())
    assert rep["n_lesions"] >= 1
    lab = np.asarray(nib.load(str(anat / "sub-07_ses-b_desc-bme_dseg.nii.gz")).dataobj)
    assert int(lab.max()) == rep["n_lesions"]
    assert (anat / "sub-07_ses-b_space-STIR_desc-registered_T1w.nii.gz").is_file()
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "bmeseg"
    assert not (out / "report.json").exists()
    # a second run refuses to overwrite, as in the flat layout
    assert main(["run", "--t1", str(t1p), "--stir", str(stirp), "-o", str(out), "--layout", "bids"]) == 2


def test_bids_layout_needs_bids_names(tmp_path: Path, nifti_pair: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    t1p, stirp, _ = nifti_pair
    assert main(["run", "--t1", str(t1p), "--stir", str(stirp), "-o", str(tmp_path / "o"), "--layout", "bids"]) == 2
    assert "sub-<label>" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
