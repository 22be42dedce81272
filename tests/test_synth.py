"""Synthetic study generator: determinism, DICOM geometry, truth volumes, contrast physics."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from bmeseg.synth import (
    LesionSpec,
    StudySpec,
    Tissue,
    make_study,
    plane_geometry,
    sample_labels,
    sample_signal,
    stir_signal_signed,
)
from bmeseg.synth.phantom import FineGrid


def _read_series(directory: Path) -> tuple[list[pydicom.Dataset], np.ndarray]:
    """Datasets sorted by InstanceNumber and the stack as ``array[i, j, k]`` (rescaled)."""
    dss = sorted((pydicom.dcmread(p) for p in directory.iterdir()), key=lambda d: int(d.InstanceNumber))
    frames = [d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss]
    return dss, np.stack([f.T for f in frames], axis=-1)


def test_same_seed_same_pixels(tmp_path: Path) -> None:
    spec = StudySpec.tiny(motion_rot_deg=(1.0, 0.0, 2.0), motion_trans_mm=(1.0, -1.0, 0.5))
    a = make_study(tmp_path / "a", spec, seed=7)
    b = make_study(tmp_path / "b", spec, seed=7)
    c = make_study(tmp_path / "c", spec, seed=8)
    for role in ("t1", "stir"):
        _, pa = _read_series(a.series[role].directory)
        _, pb = _read_series(b.series[role].directory)
        _, pc = _read_series(c.series[role].directory)
        np.testing.assert_array_equal(pa, pb)
        assert not np.array_equal(pa, pc)
        assert a.series[role].series_uid == b.series[role].series_uid
    assert sorted(p.name for p in a.series["t1"].directory.iterdir()) == sorted(
        p.name for p in b.series["t1"].directory.iterdir())
    ja = json.loads(a.truth_json.read_text())
    jb = json.loads(b.truth_json.read_text())
    assert ja == jb


def test_dicom_headers_and_geometry(tmp_path: Path) -> None:
    spec = StudySpec.tiny(localizer=True, extra_pdfs=True, fluid_plane="coronal",
                          fluid_oblique_deg=(0.0, 0.0, 8.0))
    truth = make_study(tmp_path / "s", spec, seed=1)
    assert set(truth.series) == {"localizer", "t1", "stir", "pdfs"}
    study_uids, for_uids, series_uids = set(), set(), set()
    for role, s in truth.series.items():
        dss = [pydicom.dcmread(p) for p in s.directory.iterdir()]
        study_uids |= {d.StudyInstanceUID for d in dss}
        for_uids |= {d.FrameOfReferenceUID for d in dss}
        series_uids.add(dss[0].SeriesInstanceUID)
        assert {d.SeriesInstanceUID for d in dss} == {s.series_uid}
        if role == "localizer":
            assert len(dss) == 3 and all("LOCALIZER" in d.ImageType for d in dss)
            continue
        dss.sort(key=lambda d: int(d.InstanceNumber))
        g = s.geometry
        assert len(dss) == g.shape[2]
        for k, d in enumerate(dss):
            np.testing.assert_allclose(np.asarray(d.ImagePositionPatient, float), g.index_to_lps([0, 0, k]),
                                       atol=1e-3)
            np.testing.assert_allclose(np.asarray(d.ImageOrientationPatient, float),
                                       np.r_[g.direction[:, 0], g.direction[:, 1]], atol=1e-6)
            assert (int(d.Columns), int(d.Rows)) == g.shape[:2]
            np.testing.assert_allclose([float(v) for v in d.PixelSpacing], [g.spacing_mm[1], g.spacing_mm[0]])
            assert float(d.SliceThickness) == pytest.approx(spec.slice_thickness_mm)
        # consecutive slices one spacing (thickness + gap) apart along the normal
        ipp = np.array([d.ImagePositionPatient for d in dss], float)
        steps = np.diff(ipp, axis=0) @ g.slice_normal
        np.testing.assert_allclose(steps, spec.slice_thickness_mm + spec.slice_gap_mm, atol=1e-3)
        d0 = dss[0]
        assert d0.Manufacturer == "SIEMENS" and float(d0.MagneticFieldStrength) == 1.5
        if role == "t1":
            assert d0.ScanningSequence == "SE" and "InversionTime" not in d0 and float(d0.RepetitionTime) < 800
        elif role == "stir":
            assert "IR" in list(d0.ScanningSequence) and float(d0.InversionTime) == 150.0
            assert d0.SeriesDescription == "tirm_cor" and g.plane() == "coronal"
        else:
            assert d0.ScanOptions == "FS" and "InversionTime" not in d0
    assert len(study_uids) == 1 and len(for_uids) == 1 and len(series_uids) == 4
    # truth maps are on the fluid-sensitive grid
    img = nib.load(str(truth.bme_mask))
    assert img.shape == truth.series["stir"].geometry.shape
    ras = truth.series["stir"].geometry.affine_ras
    np.testing.assert_allclose(img.affine, ras, atol=1e-4)


@pytest.mark.parametrize(("bone", "location", "volume_ml"), [
    ("femur", "medial_condyle", 4.0),
    ("tibia", "medial_plateau", 1.0),
    ("femur", "trochlea", 0.3),
    ("patella", "patella", 1.5),
])
def test_lesion_volume_and_site(tmp_path: Path, bone: str, location: str, volume_ml: float) -> None:
    truth = make_study(tmp_path / "s", StudySpec.tiny(lesions=(LesionSpec(bone, volume_ml, location),)), seed=2)
    (les,) = truth.lesions
    assert les.bone == bone and les.location == location
    assert les.volume_ml == pytest.approx(volume_ml, rel=0.10)
    assert les.touches_subchondral_plate
    lab = np.asarray(nib.load(str(truth.bme_mask)).dataobj)
    bones = np.asarray(nib.load(str(truth.bone_map)).dataobj)
    vox = truth.bme_labels.geometry.voxel_volume_ml
    # partial-volume majority on a coarse grid: looser than the fine-grid volume
    assert np.count_nonzero(lab == les.id) * vox == pytest.approx(volume_ml, rel=0.35)
    ids = {"femur": 1, "tibia": 2, "patella": 3, "fibula": 4}
    assert np.mean(bones[lab == les.id] == ids[bone]) > 0.9
    data = json.loads(truth.truth_json.read_text())
    assert data["lesions"][0]["volume_ml"] == pytest.approx(les.volume_ml, abs=1e-3)


def test_signal_ordering_inside_truth_masks(tmp_path: Path) -> None:
    # same grid for T1 and STIR, no motion, no bias, high SNR: truth masks apply to both series
    spec = StudySpec.tiny(t1_matrix=(80, 80), fluid_matrix=(80, 80), t1_slices=16, fluid_slices=16,
                          snr=400.0, bias_strength=0.0, effusion=1.0,
                          lesions=(LesionSpec("femur", 8.0, "medial_condyle"),))
    truth = make_study(tmp_path / "s", spec, seed=4)
    _, t1 = _read_series(truth.series["t1"].directory)
    _, stir = _read_series(truth.series["stir"].directory)
    tissue = np.asarray(nib.load(str(truth.tissue_map)).dataobj)
    bme = np.asarray(nib.load(str(truth.bme_mask)).dataobj)
    marrow = (tissue == Tissue.MARROW) & (bme == 0)
    muscle = tissue == Tissue.MUSCLE
    fluid = tissue == Tissue.FLUID
    lesion = bme > 0
    assert min(marrow.sum(), muscle.sum(), fluid.sum(), lesion.sum()) >= 20

    def med(img: np.ndarray, m: np.ndarray) -> float:
        return float(np.median(img[m]))

    # T1: fatty marrow > muscle > lesion (lesion core ~ muscle or darker)
    assert med(t1, marrow) > med(t1, muscle) > med(t1, lesion)
    # STIR: fluid > lesion > fatty marrow
    assert med(stir, fluid) > med(stir, lesion) > med(stir, marrow)


def test_stir_nulls_fat_at_t1_ln2() -> None:
    assert abs(float(stir_signal_signed(1.0, 260.0, 80.0, tr_ms=1e6, te_ms=0.0, ti_ms=260.0 * np.log(2)))) < 1e-9


def test_partial_volume_of_a_slab() -> None:
    """A 2 mm slab of ones seen by 4 mm slices centred on it gives 0.5, and majority labels agree."""
    grid = FineGrid.covering((-20, -20, -20), (20, 20, 20), 0.5)
    x = grid.axis(0)[:, None, None]
    field = np.broadcast_to((np.abs(x) <= 1.0), grid.shape).astype(np.float32)
    target = plane_geometry("sagittal", matrix=(8, 8), fov_mm=20.0, n_slices=3, slice_spacing_mm=4.0,
                            center_lps_mm=(0, 0, 0))
    sig = sample_signal(field, grid, target, slice_thickness_mm=4.0, supersample_mm=0.5)
    assert sig[:, :, 1].mean() == pytest.approx(2.5 / 4.0, abs=0.1)  # 5 fine voxels of 0.5 mm inside
    assert sig[:, :, 0].max() == pytest.approx(0.0, abs=1e-6)
    lab, frac = sample_labels(field.astype(np.uint8), grid, target, slice_thickness_mm=4.0, values=[1],
                              supersample_mm=0.5)
    assert np.all(lab[:, :, 1] == 1) and np.all(lab[:, :, 0] == 0)
    assert frac[:, :, 1].mean() == pytest.approx(0.625, abs=0.1)
