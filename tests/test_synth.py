"""Synthetic study generator: determinism, DICOM geometry, truth volumes, contrast physics."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage as ndi

from bmeseg.synth import (
    LesionSpec,
    StudySpec,
    Tissue,
    build_phantom,
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


# ------------------------------------------------------------------------ SIJ anatomy and mimics

SIJ_IDS = {"sacrum": 1, "ilium_left": 2, "ilium_right": 3}


def _sacral_w(ph: Any, pts: np.ndarray) -> np.ndarray:
    """Position along the sacral long axis (mm) of LPS points, with the phantom's own tilt."""
    t = np.deg2rad(ph.landmarks["tilt_deg"][0])
    return -pts[..., 1] * np.sin(t) + pts[..., 2] * np.cos(t)


def test_sij_bones_named_and_sided(tmp_path: Path) -> None:
    truth = make_study(tmp_path / "s", StudySpec.tiny(anatomy="sij"), seed=3)
    data = json.loads(truth.truth_json.read_text())
    assert data["anatomy"] == "sij"
    assert data["bone_names"] == data["bone_labels"]
    assert {k: data["bone_names"][k] for k in ("1", "2", "3")} == {"1": "sacrum", "2": "ilium_left",
                                                                   "3": "ilium_right"}
    bones = nib.load(str(truth.bone_map))
    lab = np.asarray(bones.dataobj)
    assert {1, 2, 3} <= {int(v) for v in np.unique(lab)}
    ijk = {b: np.argwhere(lab == b).mean(axis=0) for b in (1, 2, 3)}
    lps = {b: truth.bme_labels.geometry.index_to_lps(v) for b, v in ijk.items()}
    assert lps[2][0] > lps[1][0] + 30 > lps[3][0] + 60  # LPS +x = patient left
    d0 = pydicom.dcmread(next(truth.series["stir"].directory.iterdir()))
    assert d0.BodyPartExamined == "SIJOINT" and d0.PatientPosition == "HFS" and "Laterality" not in d0
    # semicoronal: coronal tilted ~25 deg about L
    n = truth.series["stir"].geometry.slice_normal
    assert 18 < np.degrees(np.arccos(abs(n[1]))) < 32 and abs(n[0]) < 1e-6
    (les,) = data["lesions"]
    assert les["bone"] == "ilium_left" and les["location"] == "LEFT_ILIAC_UPPER" and "max_depth_mm" in les


@pytest.mark.parametrize(("location", "volume_ml", "deep"), [
    ("LEFT_ILIAC_UPPER", 0.2, False),
    ("RIGHT_SACRAL_LOWER", 2.0, False),
    ("LEFT_SACRAL_UPPER", 15.0, False),
    ("RIGHT_ILIAC_LOWER", 4.0, True),
])
def test_sij_lesion_volume_site_and_depth(location: str, volume_ml: float, deep: bool) -> None:
    spec = StudySpec.tiny(anatomy="sij", lesions=(LesionSpec(location=location, volume_ml=volume_ml, deep=deep),))
    ph = build_phantom(spec, seed=5)
    (les,) = ph.lesions
    side, part, half = location.split("_")
    bone = "sacrum" if part == "SACRAL" else f"ilium_{side.lower()}"
    assert les.bone == bone and les.location == location
    assert les.volume_ml == pytest.approx(volume_ml, rel=0.10)
    inside = ph.lesion == les.id
    assert np.all(ph.bone[inside] == SIJ_IDS[bone]) and np.all(ph.tissue[inside] == Tissue.MARROW)
    assert (les.centroid_lps_mm[0] > 0) == (side == "LEFT")
    # soft edge: partial edema around the >= 0.5 core
    rim = (ph.edema > 0.05) & (ph.edema < 0.45) & (ph.tissue == Tissue.MARROW)
    assert rim.sum() > 0.2 * inside.sum()
    # upper/lower: relative to the middle of that side's joint along the sacral axis
    joint = np.isin(ph.tissue, (Tissue.CARTILAGE, Tissue.FLUID))
    jp = ph.grid.geometry.index_to_lps(np.argwhere(joint))
    jp = jp[(jp[:, 0] > 0) == (side == "LEFT")]
    jw = _sacral_w(ph, jp)
    w_mid = (jw.min() + jw.max()) / 2
    assert (_sacral_w(ph, np.asarray(les.center_lps_mm)) > w_mid) == (half == "UPPER")
    assert les.max_depth_mm is not None
    if deep:
        assert les.max_depth_mm >= 10.0
    else:
        assert les.touches_subchondral_plate


def test_sij_contrast_physics(tmp_path: Path) -> None:
    spec = StudySpec.tiny(anatomy="sij", snr=400.0, bias_strength=0.0, t1_matrix=(96, 96),
                          lesions=(LesionSpec(location="RIGHT_ILIAC_UPPER", volume_ml=6.0),))
    ph = build_phantom(spec, seed=6)
    from bmeseg.synth.study import _protocol

    t1 = ph.signal_map(_protocol("t1", spec, "coronal", 2).seq, 1.5)
    stir = np.abs(ph.signal_map(_protocol("stir", spec, "coronal", 3).seq, 1.5))
    tis, bone = ph.tissue, ph.bone

    def med(img: np.ndarray, m: np.ndarray) -> float:
        assert m.sum() >= 20
        return float(np.median(img[m]))

    marrow = (tis == Tissue.MARROW) & (ph.lesion == 0) & (ph.edema < 0.01)
    ff = ph.fat_fraction[marrow]
    assert 0.2 <= np.median(ff) <= 0.35 and np.percentile(ff, 5) > 0.12 and np.percentile(ff, 95) < 0.45
    muscle, fat = tis == Tissue.MUSCLE, tis == Tissue.FAT
    # mixed marrow as on the real SIJ scans (1007/1016): T1 at ~0.4 of the muscle-to-fat range, STIR
    # ~1.2x muscle and well above suppressed fat
    u = (med(t1, marrow) - med(t1, muscle)) / (med(t1, fat) - med(t1, muscle))
    assert 0.25 < u < 0.55
    assert 1.1 * med(stir, muscle) < med(stir, marrow) < 1.4 * med(stir, muscle)
    # (suppressed fat, its T2 outlasting muscle's at TE ~60 ms, is ~0.45x muscle: real 0.40-0.48x)
    assert med(stir, marrow) > 2.0 * med(stir, fat) and 0.3 < med(stir, fat) / med(stir, muscle) < 0.6
    # nerve roots and CSF: brighter than marrow on STIR, never inside a bone label
    for t in (Tissue.NERVE, Tissue.CSF):
        m = tis == t
        assert med(stir, m) > 1.2 * med(stir, marrow) and not np.any(bone[m])
    assert med(stir, tis == Tissue.CSF) > med(stir, ph.lesion > 0)
    # the thecal sac as on the real scans' STIR (3.7-6.7x muscle), above the SIJ preset's fluid test (3x)
    assert 3.5 * med(stir, muscle) < med(stir, tis == Tissue.CSF) < 7.0 * med(stir, muscle)
    assert med(stir, tis == Tissue.VEIN) > 1.5 * med(stir, marrow) and med(t1, tis == Tissue.GAS) < 0.05
    # joint line: each side's cartilage/fluid touches both the sacrum and that ilium
    joint = np.isin(tis, (Tissue.CARTILAGE, Tissue.FLUID))
    x = ph.grid.axis(0)[:, None, None]
    for side_mask, ilium in ((x > 0, 2), (x < 0, 3)):
        near = ndi.binary_dilation(joint & side_mask, iterations=2)
        assert np.count_nonzero(near & (bone == 1)) > 100 and np.count_nonzero(near & (bone == ilium)) > 100
        assert not np.any(bone[joint & side_mask])
    # acquired images: STIR lesion > normal marrow, T1 lesion < normal marrow
    truth = make_study(tmp_path / "s", replace(spec, fluid_matrix=(96, 96)), seed=6)
    _, t1_img = _read_series(truth.series["t1"].directory)
    _, stir_img = _read_series(truth.series["stir"].directory)
    tlab = np.asarray(nib.load(str(truth.tissue_map)).dataobj)
    bme = np.asarray(nib.load(str(truth.bme_mask)).dataobj) > 0
    nm = (tlab == Tissue.MARROW) & ~ndi.binary_dilation(bme, iterations=2)
    # (the readers' BME on the real scans: STIR 1.1-2.5x, T1 0.57-0.98x normal marrow)
    assert med(stir_img, bme) > 1.25 * med(stir_img, nm)
    assert med(t1_img, bme) < 0.8 * med(t1_img, nm)


def test_sij_same_seed_same_study(tmp_path: Path) -> None:
    spec = StudySpec.tiny(anatomy="sij", red_marrow=True, fat_sat_edge=0.5, chemical_shift=True)
    a = make_study(tmp_path / "a", spec, seed=11)
    b = make_study(tmp_path / "b", spec, seed=11)
    for role in ("t1", "stir"):
        np.testing.assert_array_equal(_read_series(a.series[role].directory)[1],
                                      _read_series(b.series[role].directory)[1])
    assert json.loads(a.truth_json.read_text()) == json.loads(b.truth_json.read_text())
    kinds = {m["kind"] for m in json.loads(a.truth_json.read_text())["mimics"]}
    assert {"red_marrow", "fat_sat_edge", "chemical_shift", "bowel", "iliac_vessels"} <= kinds


def test_sij_red_marrow_islands() -> None:
    ph = build_phantom(StudySpec.tiny(anatomy="sij", red_marrow=True, lesions=()), seed=2)
    islands = [m for m in ph.mimics if m["kind"] == "red_marrow"]
    assert {m["bone"] for m in islands} == {"sacrum", "ilium_left", "ilium_right"}
    for m in islands:
        ijk = np.round((np.asarray(m["center_lps_mm"]) - ph.grid.lo_lps_mm) / ph.grid.res_mm).astype(int)
        assert ph.fat_fraction[tuple(ijk)] < 0.3 and ph.edema[tuple(ijk)] == 0


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips"])
def test_t2fs_series_is_found_as_fat_saturated_t2(tmp_path: Path, vendor: str) -> None:
    from bmeseg.discover import discover

    spec = StudySpec.tiny(anatomy="sij", fluid_type="t2fs", vendor=vendor, field_strength_t=3.0, snr=400.0,
                          bias_strength=0.0, lesions=(LesionSpec(location="RIGHT_SACRAL_UPPER", volume_ml=6.0),))
    truth = make_study(tmp_path / "s", spec, seed=6)
    assert set(truth.series) == {"t1", "t2fs"} and truth.fluid_role == "t2fs"
    dss, img = _read_series(truth.series["t2fs"].directory)
    assert float(dss[0].EchoTime) >= 70 and float(dss[0].RepetitionTime) >= 3500 and "InversionTime" not in dss[0]
    (study,) = discover(tmp_path / "s" / "dicom")["studies"]
    assert study["pair"]["fluid_classification"] == "t2fs" and study["pair"]["t1_classification"] == "t1"
    # fat suppressed; the lesion brighter than normal marrow, fluid (CSF) brighter still
    tlab = np.asarray(nib.load(str(truth.tissue_map)).dataobj)
    bme = np.asarray(nib.load(str(truth.bme_mask)).dataobj) > 0
    nm = (tlab == Tissue.MARROW) & ~ndi.binary_dilation(bme, iterations=2)

    def med(m: np.ndarray) -> float:
        assert m.sum() >= 20
        return float(np.median(img[m]))

    # (mixed marrow water, T2 43 ms at 3 T, a little longer than muscle's 35 ms: at TE 70-80 marrow ~1.3x muscle)
    assert med(tlab == Tissue.FAT) < med(nm) < med(tlab == Tissue.MUSCLE) * 2.5
    assert med(bme) > 1.3 * med(nm) and med(tlab == Tissue.CSF) > med(bme)
    with pytest.raises(ValueError, match="'fluid_type' must be one of"):
        StudySpec(fluid_type="t2")


def test_fat_sat_edge_brightens_fat_at_the_edge(tmp_path: Path) -> None:
    base = StudySpec.tiny(snr=400.0, bias_strength=0.0, lesions=())
    out = {}
    for k, strength in (("off", 0.0), ("on", 0.8)):
        truth = make_study(tmp_path / k, replace(base, fat_sat_edge=strength), seed=1)
        out[k] = _read_series(truth.series["stir"].directory)[1]
        tlab = np.asarray(nib.load(str(truth.tissue_map)).dataobj)
    g = truth.series["stir"].geometry
    i, j = np.meshgrid(np.arange(g.shape[0]), np.arange(g.shape[1]), indexing="ij")
    rho = np.hypot(i / (g.shape[0] - 1) * 2 - 1, j / (g.shape[1] - 1) * 2 - 1)[..., None]
    fat = tlab == Tissue.FAT
    edge, centre = fat & (rho > 1.05), fat & (rho < 0.4)
    assert edge.sum() > 20 and centre.sum() > 20
    assert np.median(out["on"][edge]) > 2.0 * np.median(out["off"][edge])
    assert np.median(out["on"][centre]) == pytest.approx(np.median(out["off"][centre]), rel=0.05)
    # the T1 series is not fat-suppressed: unchanged


def test_chemical_shift_moves_fat_along_the_readout(tmp_path: Path) -> None:
    base = StudySpec.tiny(snr=1e4, bias_strength=0.0, lesions=(), t1_matrix=(128, 128))
    imgs = {}
    for k, on in (("off", False), ("on", True)):
        truth = make_study(tmp_path / k, replace(base, chemical_shift=on), seed=1)
        imgs[k] = _read_series(truth.series["t1"].directory)[1]
    # sagittal: readout along the column direction (j); fat (bright on T1) shifts by ~1.1 pixel
    diff = imgs["on"] - imgs["off"]
    assert np.abs(diff).max() > 100 and np.median(np.abs(diff)) < 5
    prof_off = imgs["off"].astype(float).sum(axis=(0, 2))
    prof_on = imgs["on"].astype(float).sum(axis=(0, 2))
    lag = np.argmax(np.correlate(np.diff(prof_on), np.diff(prof_off), mode="full")) - (len(prof_off) - 2)
    assert lag in (1, 2)


def test_spec_repr_and_dict_keep_the_first_release_layout() -> None:
    s = StudySpec.sample()
    assert "fat_sat_edge" not in repr(s) and "deep" not in repr(s) and "fat_sat_edge" not in s.as_dict()
    assert "chemical_shift=True" in repr(replace(s, chemical_shift=True))
    assert "deep=True" in repr(LesionSpec("femur", 1.0, deep=True))
    with pytest.raises(ValueError, match="'anatomy' must be one of"):
        StudySpec(anatomy="hand")
    with pytest.raises(ValueError, match="'location' must be one of"):
        build_phantom(StudySpec.tiny(anatomy="sij", lesions=(LesionSpec(location="LEFT_KNEE"),)), seed=1)


def test_knee_demo_unchanged(tmp_path: Path) -> None:
    """``sample_data/make_sample.py`` still writes the committed knee demo, byte for byte."""
    import filecmp
    import importlib.util

    repo = Path(__file__).resolve().parent.parent
    demo = repo / "sample_data" / "knee_demo"
    if not demo.is_dir():
        pytest.skip("sample_data/knee_demo not present")
    spec = importlib.util.spec_from_file_location("make_sample", repo / "sample_data" / "make_sample.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(tmp_path / "kd")]) == 0
    ours = sorted(p.relative_to(tmp_path / "kd") for p in (tmp_path / "kd").rglob("*") if p.is_file())
    ref = sorted(p.relative_to(demo) for p in demo.rglob("*") if p.is_file())
    assert ours == ref
    _, mismatch, errors = filecmp.cmpfiles(demo, tmp_path / "kd", [str(p) for p in ref], shallow=False)
    assert not mismatch and not errors
