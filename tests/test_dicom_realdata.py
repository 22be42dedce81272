"""DICOM loading checked against real scanner files and dcm2niix reference conversions.

Data: ``$BMESEG_REAL_DATA`` or ``<repo>/../shared/data`` (see its README); skipped when absent.

What is compared, honestly:

* WG04 (NEMA): the lossless transfer syntaxes (RLE, JPEG lossless, JPEG-LS lossless,
  JPEG 2000 lossless) decode to exactly the uncompressed REF pixels. Lossy syntaxes
  either decode close to REF or fail with a bmeseg error (the 12-bit JPEG-extended
  files are rejected by the installed libjpeg).
* dcm2niix references: both volumes are put in nibabel's closest-canonical (RAS+)
  orientation, so dcm2niix's row flip / axis order does not matter; then the voxel->RAS
  affines must agree to 0.01 mm and the (scaled) voxel values exactly. For 4-D
  references (time series) the first volume is compared: bmeseg loads the first
  volume of a repeated-position series, with a warning.
* Philips enhanced: dcm2niix writes Philips "floating point" values (it divides the
  DICOM rescaled value by RescaleSlope x the private ScaleSlope 2005,100E, recorded as
  ``PhilipsRescaleSlope``/``PhilipsScaleSlope`` in its JSON); bmeseg keeps the standard
  DICOM rescaled values. The test converts with the JSON factors and compares to
  2e-5 of the value range (dcm2niix's slope for the field map is 0.24420166 where
  the DICOM factors give 0.24420024: a 6e-6 relative difference in its arithmetic).
* Siemens mosaics (dcm_qa EPI, 2 time points each) are unpacked; the first time
  point is compared with dcm2niix's first volume.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bmeseg.errors import BmesegError, DicomReadError
from bmeseg.io.dicom import SeriesInfo, index_dicom, load_series
from bmeseg.volume import Volume

pytestmark = pytest.mark.realdata


def _data_root() -> Path | None:
    env = os.environ.get("BMESEG_REAL_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    qa = root / "dicom_qa"
    return qa if qa.is_dir() else None


QA = _data_root()
needs_data = pytest.mark.skipif(QA is None, reason="real DICOM data (shared/data/dicom_qa) not found")


def _qa() -> Path:
    assert QA is not None
    return QA


def _one(path: Path) -> SeriesInfo:
    idx = index_dicom(path, jobs=1)
    assert len(idx.series) == 1, [s.key for s in idx.series]
    return idx.series[0]


def _canonical(data: np.ndarray, affine_ras: np.ndarray) -> Any:
    import nibabel as nib

    return nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine_ras))


def _reference(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """dcm2niix NIfTI -> (scaled data of the first volume, RAS affine)."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).astype(np.float64)  # scl_slope/scl_inter applied by nibabel
    if data.ndim == 4:
        data = data[..., 0]
    return data, np.asarray(img.affine)


def _compare(vol: Volume, ref: Path, *, scale: float = 1.0, rtol: float = 0.0) -> None:
    ref_data, ref_affine = _reference(ref)
    ours = _canonical(vol.array.astype(np.float64) * scale, vol.geometry.affine_ras)
    theirs = _canonical(ref_data, ref_affine)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=0.01)
    a, b = np.asanyarray(ours.dataobj), np.asanyarray(theirs.dataobj)
    if rtol == 0.0:
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, atol=rtol * float(np.abs(b).max()))


# ---------------------------------------------------------------------------- WG04

WG04_LOSSLESS = ["RLE", "JPLL", "JLSL", "J2KR"]
WG04_LOSSY = ["JPLY", "JLSN", "J2KI"]


@needs_data
@pytest.mark.parametrize("mr", ["MR1", "MR2", "MR3", "MR4"])
@pytest.mark.parametrize("syntax", WG04_LOSSLESS)
def test_wg04_lossless_decodes_exactly(mr: str, syntax: str) -> None:
    ref = load_series(_one(_qa() / "wg04" / "REF" / f"{mr}_UNC"))
    got = load_series(_one(_qa() / "wg04" / syntax / f"{mr}_{syntax}"))
    np.testing.assert_array_equal(got.array, ref.array)
    np.testing.assert_allclose(got.affine, ref.affine, atol=1e-6)


@needs_data
@pytest.mark.parametrize("mr", ["MR1", "MR2", "MR3", "MR4"])
@pytest.mark.parametrize("syntax", WG04_LOSSY)
def test_wg04_lossy_decodes_close_or_fails_clearly(mr: str, syntax: str) -> None:
    ref = load_series(_one(_qa() / "wg04" / "REF" / f"{mr}_UNC"))
    path = _qa() / "wg04" / syntax / f"{mr}_{syntax}"
    try:
        got = load_series(_one(path))
    except DicomReadError as exc:  # 12-bit JPEG extended: libjpeg refuses these files
        assert syntax == "JPLY"
        assert path.name in str(exc)
        return
    assert got.shape == ref.shape
    r = np.corrcoef(got.array.ravel(), ref.array.ravel())[0, 1]
    assert r > 0.99


@needs_data
def test_wg04_study_indexes_and_splits_by_image_type() -> None:
    idx = index_dicom(_qa() / "wg04", jobs=1)
    assert idx.n_files == 4 * 8 + 1  # 4 images x (REF + 7 syntaxes) + LICENSE.txt
    assert [p.name for p, _ in idx.skipped] == ["LICENSE.txt"]
    # copies sharing a SeriesInstanceUID are split into ORIGINAL / DERIVED (lossy) parts;
    # the J2KI copies carry their own UIDs
    assert len(idx.series) == 11
    assert sum(s.key.endswith("#type2") for s in idx.series) == 3
    assert all(s.n_slices == 1 for s in idx.series)


# ---------------------------------------------------------------------------- dcm2niix references


@needs_data
@pytest.mark.parametrize("echo", [1, 2])
def test_pdt2_dual_echo_split_matches_dcm2niix(echo: int) -> None:
    idx = index_dicom(_qa() / "dcm_qa_pdt2" / "In", jobs=1)
    assert len(idx.series) == 2
    (info,) = [s for s in idx.series if s.key.endswith(f"#echo{echo}")]
    assert info.n_slices == 35
    ref = _qa() / "dcm_qa_pdt2" / "Ref" / f"Siemens_pd+t2_tse_sag_ISO_1.8mm_3_e{echo}.nii"
    sidecar = json.loads(ref.with_suffix(".json").read_text())
    assert info.echo_time_ms == pytest.approx(sidecar["EchoTime"] * 1000)
    _compare(load_series(info), ref)


@needs_data
def test_siemens_xa10_enhanced_matches_dcm2niix_first_volume() -> None:
    info = _one(_qa() / "dcm_qa_enh" / "In" / "Siemens")
    assert info.is_enhanced and info.n_slices == 6 and info.n_frames == 24
    vol = load_series(info)
    assert any("first volume" in w for w in vol.meta["warnings"])
    _compare(vol, _qa() / "dcm_qa_enh" / "Ref" / "Siemens_REST1_w_SMS_PF7-8_6.nii")


@needs_data
@pytest.mark.parametrize(("frame_type", "ref_name"), [
    ("M", "Philips_WIP_B0_NS_801_e1"),
    ("FIELD_MAP", "Philips_WIP_B0_NS_801_e2_fieldmaphz"),
])
def test_philips_enhanced_fieldmap_matches_dcm2niix(frame_type: str, ref_name: str) -> None:
    idx = index_dicom(_qa() / "dcm_qa_enh" / "In" / "Philips", jobs=1)
    assert len(idx.series) == 2  # magnitude and field map frames of one file are split
    (info,) = [s for s in idx.series if s.image_type[-1] == frame_type]
    assert info.is_enhanced and info.n_slices == 32
    ref = _qa() / "dcm_qa_enh" / "Ref" / f"{ref_name}.nii"
    sidecar = json.loads(ref.with_suffix(".json").read_text())
    philips_fp = 1.0 / (sidecar["PhilipsRescaleSlope"] * sidecar["PhilipsScaleSlope"])
    _compare(load_series(info), ref, scale=philips_fp, rtol=2e-5)


def _dcm_qa_series() -> list[tuple[int, str]]:
    if QA is None:
        return []
    return sorted(
        (int(p.stem.rsplit("_", 1)[1]), p.name) for p in (QA / "dcm_qa" / "Ref").glob("*.nii")
    )


@needs_data
def test_dcm_qa_indexes_every_mosaic_series() -> None:
    idx = index_dicom(_qa() / "dcm_qa" / "In", jobs=1)
    assert sorted(s.series_number for s in idx.series) == [n for n, _ in _dcm_qa_series()]
    assert all(s.is_mosaic and s.n_slices in (35, 36) for s in idx.series)


@needs_data
@pytest.mark.parametrize(("series_number", "ref_name"), _dcm_qa_series())
def test_siemens_mosaic_matches_dcm2niix(series_number: int, ref_name: str) -> None:
    # axial/coronal/sagittal, ascending/descending/interleaved EPI mosaics, two of them
    # JPEG-lossless / JPEG 2000 compressed; two time points each (the first is compared)
    idx = index_dicom(_qa() / "dcm_qa" / "In", jobs=1)
    (info,) = [s for s in idx.series if s.series_number == series_number]
    _compare(load_series(info), _qa() / "dcm_qa" / "Ref" / ref_name)


@needs_data
def test_whole_collection_indexes_without_crashing() -> None:
    idx = index_dicom(_qa(), jobs=1)
    assert idx.n_files > 150
    failures = []
    for info in idx.series:
        try:
            load_series(info)
        except BmesegError:
            pass
        except Exception as exc:  # anything else is a bug
            failures.append(f"{info.label}: {type(exc).__name__}: {exc}")
    assert failures == []


# ---------------------------------------------------------------------------- CLI on real data


@needs_data
@pytest.mark.parametrize(("mr", "what"), [("MR3", "GE knee T1 SE"), ("MR4", "Philips brain STIR")])
def test_run_on_a_single_series_exits_3_listing_it(
    mr: str, what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One WG04 image alone (no partner series): `run` stops with exit 3 and lists the series."""
    from bmeseg.cli import main

    study = tmp_path / "study"
    study.mkdir()
    (study / f"{mr}_UNC").symlink_to(_qa() / "wg04" / "REF" / f"{mr}_UNC")
    assert main(["run", str(study), "-o", str(tmp_path / "out")]) == 3, what
    err = capsys.readouterr().err
    assert "Series found (1)" in err
    assert "no T1-weighted" in err or "no fat-suppressed fluid-sensitive" in err
    # the one series is named with its classification and the reason it is not usable
    # (a single image is not a volume: it is classified as a localizer)
    assert "1 slices -> localizer: only 1 slice(s)" in err
    assert not (tmp_path / "out" / "report.json").exists()


@needs_data
def test_convert_cli_writes_pd_and_t2_matching_dcm2niix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import nibabel as nib

    from bmeseg.cli import main

    out = tmp_path / "nii"
    assert main(["convert", str(_qa() / "dcm_qa_pdt2" / "In"), "-o", str(out), "--no-progress"]) == 0
    assert "wrote 2 series" in capsys.readouterr().out
    written = sorted(out.glob("*.nii.gz"))
    assert [p.name for p in written] == ["3_pd_t2_tse_sag_ISO_1_8mm_echo1.nii.gz",
                                         "3_pd_t2_tse_sag_ISO_1_8mm_echo2.nii.gz"]
    for echo, ours in enumerate(written, start=1):
        ref = _qa() / "dcm_qa_pdt2" / "Ref" / f"Siemens_pd+t2_tse_sag_ISO_1.8mm_3_e{echo}.nii"
        img = nib.load(str(ours))
        a = _canonical(np.asanyarray(img.dataobj), img.affine)
        b = _canonical(*_reference(ref))
        np.testing.assert_allclose(a.affine, b.affine, atol=0.01)
        np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
        side = json.loads(ours.with_name(ours.name.replace(".nii.gz", ".json")).read_text())
        ref_side = json.loads(ref.with_suffix(".json").read_text())
        for key in ("EchoTime", "RepetitionTime", "FlipAngle", "SeriesNumber", "EchoNumber"):
            assert side[key] == pytest.approx(ref_side[key]), key


# ---------------------------------------------------------------------------- convert vs every reference

_ENH_OUTPUTS = {  # dcm2niix reference -> bmeseg convert output
    "Siemens_REST1_w_SMS_PF7-8_6": "6_REST1_w_SMS_PF7-8",
    # bmeseg numbers split parts by (echo number, image type) order: the field map frames carry TE 0
    "Philips_WIP_B0_NS_801_e1": "801_B0_NS_echo2_type1",  # magnitude (M)
    "Philips_WIP_B0_NS_801_e2_fieldmaphz": "801_B0_NS_echo1_type2",  # FIELD_MAP
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`convert_dicom` of the mosaic and enhanced collections, once."""
    from bmeseg.io.convert import convert_dicom

    out = tmp_path_factory.mktemp("converted")
    for sub in ("dcm_qa", "dcm_qa_enh"):
        res = convert_dicom(_qa() / sub / "In", out / sub, jobs=1)
        assert res.skipped_series == ()
    return out


def _reference_pairs() -> list[tuple[str, str]]:
    pairs = [(f"dcm_qa/Ref/{name}", f"dcm_qa/{num}_{name.rsplit('_', 1)[0]}") for num, name in _dcm_qa_series()]
    pairs += [(f"dcm_qa_enh/Ref/{ref}.nii", f"dcm_qa_enh/{ours}") for ref, ours in _ENH_OUTPUTS.items()]
    return pairs if QA is not None else []


@needs_data
@pytest.mark.parametrize(("ref_name", "ours_name"), _reference_pairs())
def test_convert_output_matches_dcm2niix(converted: Path, ref_name: str, ours_name: str) -> None:
    """The NIfTI files `convert` writes (not only the loaded volumes) match dcm2niix: affine to
    0.01 mm, values exactly (Philips: after dcm2niix's private scaling, see the module docstring)."""
    import nibabel as nib

    ref = _qa() / ref_name
    img = nib.load(str(converted / f"{ours_name}.nii.gz"))
    scale, rtol = 1.0, 0.0
    if "Philips" in ref_name:
        side = json.loads(ref.with_suffix(".json").read_text())
        scale, rtol = 1.0 / (side["PhilipsRescaleSlope"] * side["PhilipsScaleSlope"]), 2e-5
    a = _canonical(np.asanyarray(img.dataobj).astype(np.float64) * scale, img.affine)
    b = _canonical(*_reference(ref))
    assert a.shape == b.shape
    np.testing.assert_allclose(a.affine, b.affine, atol=0.01)
    x, y = np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)
    if rtol:
        np.testing.assert_allclose(x, y, atol=rtol * float(np.abs(y).max()))
    else:
        np.testing.assert_array_equal(x, y)


@needs_data
def test_discover_whole_collection() -> None:
    """`discover` on every real file at once: each series listed and classified, nothing crashes."""
    from bmeseg.discover import discover, format_discovery

    rep = discover(_qa(), jobs=1)
    assert rep["n_series"] >= 35 and rep["n_studies"] >= 10
    series = [s for st in rep["studies"] for s in st["series"]]
    assert all(s["classification"] and s["reason"] for s in series)
    pdt2 = [s for s in series if s["series_description"] == "pd+t2_tse_sag_ISO_1.8mm"]
    assert [s["echo_time_ms"] for s in pdt2] == pytest.approx([11.0, 92.0], abs=0.1)
    stir = [s for s in series if "STIR GR 512" in (s["series_description"], s["protocol_name"])]
    assert stir and all(s["inversion_time_ms"] == 140.0 for s in stir)
    assert all(st["pair"] is not None or st["pair_error"] for st in rep["studies"])
    assert "LICENSE.txt" not in format_discovery(rep)
