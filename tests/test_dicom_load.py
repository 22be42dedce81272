"""DICOM index + load on synthetic files written by bmeseg.io.dicom_write (known geometry)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from bmeseg.errors import DicomReadError, GeometryError, MissingDependencyError
from bmeseg.io import dicom as bdicom
from bmeseg.io.dicom import SeriesInfo, index_dicom, load_series
from bmeseg.io.dicom_write import MRAcquisition, new_uid, write_dicom_series
from bmeseg.volume import Geometry, Volume

STUDY = new_uid("study")
FOR = new_uid("for")


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _volume(shape: tuple[int, int, int] = (12, 9, 7), *, seed: int = 0, signed: bool = False) -> Volume:
    """Oblique, unequal spacing, sagittal-ish; values with a pattern so flips show."""
    rng = np.random.default_rng(seed)
    base = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # a sagittal-like frame
    direction = _rotation(0.2, -0.15, 0.3) @ base
    if np.linalg.det(direction) < 0:
        direction[:, 2] *= -1
    geom = Geometry(shape, (0.7, 0.45, 3.3), (-20.5, 13.25, 40.0), direction)
    i, j, k = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    arr = 100.0 * i + 10.0 * j + k + rng.integers(0, 5, shape)
    if signed:
        arr = arr - 600.0
    return Volume(arr.astype(np.float32), geom)


def _acq(**kw: object) -> MRAcquisition:
    args: dict[str, object] = {"series_description": "t1_tse_sag", "series_number": 3,
                               "repetition_time_ms": 600.0, "echo_time_ms": 12.0}
    args.update(kw)
    return MRAcquisition(**args)  # type: ignore[arg-type]


def _write(vol: Volume, out: Path, *, names: list[str] | None = None, series_uid: str | None = None,
           signed: bool = False, **acq: object) -> list[Path]:
    return write_dicom_series(vol, out, _acq(**acq), study_uid=STUDY, frame_of_reference_uid=FOR,
                              series_uid=series_uid, file_names=names, signed=signed)


def _only(index_root: Path) -> SeriesInfo:
    idx = index_dicom(index_root)
    assert len(idx.series) == 1, [s.key for s in idx.series]
    return idx.series[0]


def _quantum(vol: Volume) -> float:
    """Largest rounding error of the uint16/int16 storage of ``vol``."""
    return float(np.ptp(vol.array)) / 32767 + 1e-4


def test_oblique_unequal_spacing_shuffled_names(tmp_path: Path) -> None:
    vol = _volume()
    rng = np.random.default_rng(1)
    names = [f"{n:08x}" for n in rng.permutation(1000)[: vol.shape[2]]]  # no extension, random order
    _write(vol, tmp_path / "a" / "b", names=names)
    info = _only(tmp_path)
    assert info.n_slices == vol.shape[2]
    assert info.rows == vol.shape[1] and info.columns == vol.shape[0]
    out = load_series(info)
    assert out.array.dtype == np.float32
    assert out.shape == vol.shape
    np.testing.assert_allclose(out.affine, vol.affine, atol=1e-4)
    np.testing.assert_allclose(out.array, vol.array, atol=_quantum(vol))
    assert out.geometry.spacing_mm[2] > 0
    assert np.linalg.det(out.geometry.direction) == pytest.approx(1.0, abs=1e-6)
    assert out.meta["series_description"] == "t1_tse_sag"
    assert out.meta["repetition_time_ms"] == 600.0
    assert out.meta["n_files"] == vol.shape[2]
    assert out.meta["warnings"] == []


def test_reversed_slice_order_gives_positive_spacing(tmp_path: Path) -> None:
    vol = _volume((6, 5, 4))
    g = vol.geometry
    # k axis pointing against row x col: the loader must re-order to +normal
    flipped_dir = g.direction.copy()
    flipped_dir[:, 2] *= -1
    flipped_dir[:, 0] *= -1  # keep a proper rotation, so the writer's normal is reversed w.r.t. k
    fg = Geometry(g.shape, g.spacing_mm, g.origin_lps_mm, flipped_dir)
    _write(Volume(vol.array, fg), tmp_path)
    out = load_series(_only(tmp_path))
    # same voxels in space: compare world position of every voxel's value
    ijk = np.argwhere(np.ones(vol.shape, bool))
    world = fg.index_to_lps(ijk)
    back = np.rint(out.geometry.lps_to_index(world)).astype(int)
    np.testing.assert_allclose(out.array[tuple(back.T)], vol.array[tuple(ijk.T)], atol=_quantum(vol))
    assert out.geometry.spacing_mm[2] > 0


def test_junk_truncated_and_dicomdir_are_skipped(tmp_path: Path) -> None:
    vol = _volume((8, 6, 5))
    files = _write(vol, tmp_path / "patient" / "study" / "s3")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "patient" / "empty").write_bytes(b"")
    (tmp_path / "patient" / "image.nii").write_bytes(b"\x00" * 400)
    (tmp_path / "patient" / ".DS_Store").write_bytes(b"\x00\x01junk" * 30)
    cut = tmp_path / "patient" / "cut.dcm"
    data = files[2].read_bytes()
    cut.write_bytes(data[: len(data) - 40])  # pixel data cut short
    cut_header = tmp_path / "patient" / "cut_header.dcm"
    cut_header.write_bytes(data[:300])  # cut inside the header
    _write_dicomdir(tmp_path / "DICOMDIR")

    idx = index_dicom(tmp_path)
    assert [s.n_slices for s in idx.series] == [5]
    reasons = {p.name: r for p, r in idx.skipped}
    assert set(reasons) == {"notes.txt", "empty", "image.nii", ".DS_Store", "cut.dcm", "cut_header.dcm",
                            "DICOMDIR"}
    assert "truncated" in reasons["cut.dcm"]
    assert "DICOMDIR" in reasons["DICOMDIR"]
    assert idx.n_files == 5 + 7
    # the truncated copy is not part of the series, which still loads
    assert load_series(idx.series[0]).shape == vol.shape


def _write_dicomdir(path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = new_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.FileSetID = "TEST"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = Sequence([])
    ds.save_as(str(path), enforce_file_format=True)


def test_mixed_echoes_are_split(tmp_path: Path) -> None:
    vol = _volume((8, 6, 5))
    uid = new_uid("dual-echo")
    _write(vol, tmp_path, names=[f"e1_{k}" for k in range(5)], series_uid=uid, echo_number=1,
           echo_time_ms=11.0, series_description="pd+t2")
    _write(Volume(vol.array * 0.5, vol.geometry), tmp_path, names=[f"e2_{k}" for k in range(5)],
           series_uid=uid, echo_number=2, echo_time_ms=92.0, series_description="pd+t2")
    idx = index_dicom(tmp_path)
    keys = sorted(s.key for s in idx.series)
    assert keys == [f"{uid}#echo1", f"{uid}#echo2"]
    by_key = {s.key: s for s in idx.series}
    assert by_key[f"{uid}#echo2"].echo_time_ms == 92.0
    assert all(s.n_slices == 5 and s.series_instance_uid == uid for s in idx.series)
    np.testing.assert_allclose(load_series(by_key[f"{uid}#echo2"]).array, vol.array * 0.5,
                               atol=_quantum(vol))


def test_mixed_orientations_and_types_are_split(tmp_path: Path) -> None:
    uid = new_uid("localizer")
    vol = _volume((8, 6, 3))
    axial = Volume(vol.array, Geometry(vol.shape, (1.0, 1.0, 5.0), (0.0, 0.0, 0.0)))
    _write(vol, tmp_path, names=["a0", "a1", "a2"], series_uid=uid, image_type=("ORIGINAL", "PRIMARY", "M"))
    _write(axial, tmp_path, names=["b0", "b1", "b2"], series_uid=uid, image_type=("ORIGINAL", "PRIMARY", "M"))
    _write(axial, tmp_path / "d", names=["c0", "c1", "c2"], series_uid=uid,
           image_type=("DERIVED", "SECONDARY", "MPR"))
    idx = index_dicom(tmp_path)
    assert len(idx.series) == 3
    assert len({s.key for s in idx.series}) == 3
    assert all(s.key.startswith(uid + "#") for s in idx.series)
    assert {s.image_type[0] for s in idx.series} == {"ORIGINAL", "DERIVED"}
    assert {s.plane for s in idx.series} == {"axial", "sagittal"}


def test_duplicate_slice_is_dropped_with_warning(tmp_path: Path) -> None:
    vol = _volume((8, 6, 5))
    files = _write(vol, tmp_path)
    ds = pydicom.dcmread(files[2])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    ds.InstanceNumber = 99
    ds.save_as(tmp_path / "copy_of_3.dcm")
    info = _only(tmp_path)
    assert info.n_slices == 5 and len(info.files) == 6
    out = load_series(info)
    assert out.shape == vol.shape
    assert any("duplicate" in w for w in out.meta["warnings"])
    np.testing.assert_allclose(out.affine, vol.affine, atol=1e-4)


def test_conflicting_images_at_one_position_raise(tmp_path: Path) -> None:
    vol = _volume((8, 6, 5))
    files = _write(vol, tmp_path)
    ds = pydicom.dcmread(files[2])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    ds.RescaleIntercept = 7.0  # same position, different values
    ds.save_as(tmp_path / "other_3.dcm")
    with pytest.raises(DicomReadError, match="same position"):
        load_series(_only(tmp_path))


def test_repeated_whole_volumes_keep_the_first(tmp_path: Path) -> None:
    vol = _volume((8, 6, 4))
    uid = new_uid("dyn")
    _write(vol, tmp_path, names=[f"t1_{k}" for k in range(4)], series_uid=uid, extra={"AcquisitionNumber": 1})
    _write(Volume(vol.array + 50, vol.geometry), tmp_path, names=[f"t0_{k}" for k in range(4)],
           series_uid=uid, extra={"AcquisitionNumber": 2})
    out = load_series(_only(tmp_path))
    np.testing.assert_allclose(out.array, vol.array, atol=_quantum(vol))
    assert any("first volume" in w for w in out.meta["warnings"])


def test_missing_slice_raises(tmp_path: Path) -> None:
    vol = _volume((8, 6, 6))
    files = _write(vol, tmp_path)
    files[3].unlink()
    info = _only(tmp_path)
    with pytest.raises(GeometryError, match=r"gap of 6\.600 mm") as exc:
        load_series(info)
    assert info.series_instance_uid in str(exc.value)


def test_sheared_stack_raises(tmp_path: Path) -> None:
    vol = _volume((8, 6, 5))
    files = _write(vol, tmp_path)
    row = vol.geometry.direction[:, 0]
    for k, f in enumerate(files):  # a 1 mm per slice in-plane drift: gantry-tilt-like
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [float(v) for v in np.asarray(ds.ImagePositionPatient, float) + k * row]
        ds.save_as(f)
    with pytest.raises(GeometryError, match="tilt"):
        load_series(_only(tmp_path))


def test_signed_pixels_and_per_slice_rescale(tmp_path: Path) -> None:
    vol = _volume((8, 6, 6), signed=True)
    assert vol.array.min() < 0
    uid = new_uid("signed")
    g = vol.geometry
    # two halves written separately get different RescaleSlope values
    for k0, k1, scale in ((0, 3, 1.0), (3, 6, 9.0)):
        sub = Geometry((8, 6, k1 - k0), g.spacing_mm, tuple(g.index_to_lps([0, 0, k0])), g.direction)
        _write(Volume(vol.array[:, :, k0:k1] * scale, sub), tmp_path, names=[f"s{k}" for k in range(k0, k1)],
               series_uid=uid, signed=True)
    slopes = {float(pydicom.dcmread(p, stop_before_pixels=True).RescaleSlope) for p in tmp_path.iterdir()}
    assert len(slopes) == 2
    assert {int(pydicom.dcmread(p, stop_before_pixels=True).PixelRepresentation) for p in tmp_path.iterdir()} == {1}
    out = load_series(_only(tmp_path))
    expected = vol.array.copy()
    expected[:, :, 3:] *= 9.0
    np.testing.assert_allclose(out.array, expected, atol=9 * _quantum(vol))
    np.testing.assert_allclose(out.affine, vol.affine, atol=1e-4)


def _to_mosaic(vol: Volume, files: list[Path], out: Path) -> Path:
    """Tile a classic series into one Siemens-style mosaic (no CSA header: normal = row x col)."""
    dss = [pydicom.dcmread(f) for f in files]
    n = len(dss)
    grid = int(np.ceil(np.sqrt(n)))
    rows, cols = int(dss[0].Rows), int(dss[0].Columns)
    mosaic = np.zeros((grid * rows, grid * cols), np.uint16)
    for k, d in enumerate(dss):
        mosaic[(k // grid) * rows : (k // grid + 1) * rows, (k % grid) * cols : (k % grid + 1) * cols] = d.pixel_array
    ds = dss[0]
    g = vol.geometry
    row_spacing, col_spacing = g.spacing_mm[1], g.spacing_mm[0]
    corner = (np.asarray(ds.ImagePositionPatient, float)
              - g.direction[:, 0] * col_spacing * (grid * cols - cols) / 2
              - g.direction[:, 1] * row_spacing * (grid * rows - rows) / 2)
    ds.ImagePositionPatient = [float(v) for v in corner]
    ds.Rows, ds.Columns = grid * rows, grid * cols
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0A, "US", n)
    ds.PixelData = mosaic.tobytes()
    ds.save_as(out)
    return out


def test_mosaic_is_unpacked(tmp_path: Path) -> None:
    vol = _volume((8, 6, 7))
    files = _write(vol, tmp_path / "classic")
    _to_mosaic(vol, files, tmp_path / "mosaic.dcm")
    info = _only(tmp_path / "mosaic.dcm")
    assert info.is_mosaic and info.n_slices == 7
    out = load_series(info)
    np.testing.assert_allclose(out.affine, vol.affine, atol=1e-4)
    np.testing.assert_allclose(out.array, vol.array, atol=_quantum(vol))


def test_mosaic_without_count_is_refused(tmp_path: Path) -> None:
    vol = _volume((8, 6, 4))
    files = _write(vol, tmp_path / "classic")
    _to_mosaic(vol, files, tmp_path / "mosaic.dcm")
    ds = pydicom.dcmread(tmp_path / "mosaic.dcm")
    del ds[0x0019100A]
    ds.save_as(tmp_path / "mosaic.dcm")
    with pytest.raises(DicomReadError, match="mosaic"):
        load_series(_only(tmp_path / "mosaic.dcm"))


def test_rle_copy_decodes_exactly(tmp_path: Path) -> None:
    vol = _volume((8, 6, 5), signed=True)
    files = _write(vol, tmp_path / "raw", signed=True)
    (tmp_path / "rle").mkdir()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(RLELossless)
        ds.save_as(tmp_path / "rle" / f.name)
    raw = load_series(_only(tmp_path / "raw"))
    rle = load_series(_only(tmp_path / "rle"))
    assert pydicom.dcmread(tmp_path / "rle" / files[0].name).file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(rle.array, raw.array)
    np.testing.assert_array_equal(rle.affine, raw.affine)


def test_rle_truncated_is_skipped(tmp_path: Path) -> None:
    files = _write(_volume((8, 6, 3)), tmp_path / "raw")
    ds = pydicom.dcmread(files[0])
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    data = (tmp_path / "rle.dcm").read_bytes()
    (tmp_path / "rle.dcm").write_bytes(data[:-30])
    idx = index_dicom(tmp_path)
    assert [p.name for p, r in idx.skipped if "truncated" in r] == ["rle.dcm"]


def test_missing_codec_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _write(_volume((8, 6, 3)), tmp_path)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(RLELossless)
        ds.save_as(f)

    def no_decoder(self: Dataset) -> np.ndarray:
        raise RuntimeError("Unable to decode as the plugins are missing dependencies")

    monkeypatch.setattr(Dataset, "pixel_array", property(no_decoder))
    monkeypatch.setattr(bdicom, "_decoder_available", lambda ts: False)
    with pytest.raises(MissingDependencyError, match="pylibjpeg-rle") as exc:
        load_series(_only(tmp_path))
    assert exc.value.extra == "codecs"


def _to_enhanced(files: list[Path], out: Path, *, shuffle_seed: int = 3) -> Path:
    """Pack a classic series into one Enhanced MR Image Storage file (frames shuffled)."""
    dss = [pydicom.dcmread(f) for f in files]
    order = np.random.default_rng(shuffle_seed).permutation(len(dss))
    first = dss[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    meta.MediaStorageSOPInstanceUID = new_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(out), {}, file_meta=meta, preamble=b"\0" * 128)
    for kw in ("Modality", "Manufacturer", "PatientName", "PatientID", "StudyDate", "StudyInstanceUID",
               "FrameOfReferenceUID", "SeriesNumber", "SeriesDescription", "ProtocolName",
               "MagneticFieldStrength", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
               "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        setattr(ds, kw, getattr(first, kw))
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = new_uid("enhanced")
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.EchoPulseSequence = "SPIN"
    ds.InversionRecovery = "YES"
    ds.PulseSequenceName = "TIRM"
    ds.NumberOfFrames = len(dss)

    shared = Dataset()
    ori = Dataset()
    ori.ImageOrientationPatient = first.ImageOrientationPatient
    shared.PlaneOrientationSequence = Sequence([ori])
    pm = Dataset()
    pm.PixelSpacing = first.PixelSpacing
    pm.SliceThickness = first.SliceThickness
    shared.PixelMeasuresSequence = Sequence([pm])
    timing = Dataset()
    timing.RepetitionTime = 5000.0
    timing.FlipAngle = 150.0
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    modifier = Dataset()
    modifier.InversionRecovery = "YES"
    modifier.InversionTimes = [160.0]
    shared.MRModifierSequence = Sequence([modifier])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])

    per_frame = []
    pixels = []
    for n, idx in enumerate(order):
        src = dss[int(idx)]
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = src.ImagePositionPatient
        item.PlanePositionSequence = Sequence([pos])
        pvt = Dataset()
        pvt.RescaleSlope = src.RescaleSlope
        pvt.RescaleIntercept = src.RescaleIntercept
        pvt.RescaleType = "US"
        item.PixelValueTransformationSequence = Sequence([pvt])
        echo = Dataset()
        echo.EffectiveEchoTime = 60.0
        item.MREchoSequence = Sequence([echo])
        ftype = Dataset()
        ftype.FrameType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        item.MRImageFrameTypeSequence = Sequence([ftype])
        content = Dataset()
        content.InStackPositionNumber = n + 1
        item.FrameContentSequence = Sequence([content])
        per_frame.append(item)
        pixels.append(src.PixelData)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = b"".join(pixels)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(out), enforce_file_format=True)
    return out


def test_enhanced_multiframe_matches_classic(tmp_path: Path) -> None:
    vol = _volume((10, 7, 6))
    files = _write(vol, tmp_path / "classic")
    _to_enhanced(files, tmp_path / "enh" / "enhanced.dcm")
    classic = load_series(_only(tmp_path / "classic"))
    info = _only(tmp_path / "enh")
    assert info.is_enhanced
    assert info.n_slices == 6 and info.n_frames == 6
    assert info.repetition_time_ms == 5000.0
    assert info.inversion_time_ms == 160.0
    assert info.echo_time_ms == 60.0
    assert info.flip_angle_deg == 150.0
    assert info.scanning_sequence == ("SE", "IR")
    assert info.sequence_name == "TIRM"
    assert info.image_type == ("ORIGINAL", "PRIMARY", "M", "NONE")
    enh = load_series(info)
    np.testing.assert_allclose(enh.affine, vol.affine, atol=1e-4)
    np.testing.assert_array_equal(enh.array, classic.array)


def test_index_many_files_in_worker_processes(tmp_path: Path) -> None:
    vol = _volume((4, 4, 30))
    for s in range(8):
        _write(vol, tmp_path / f"s{s}", series_number=s + 1, series_uid=new_uid(f"many{s}"))
    serial = index_dicom(tmp_path, jobs=1)
    pooled = index_dicom(tmp_path, jobs=2)
    assert serial.n_files == pooled.n_files == 240
    assert [(s.key, s.n_slices, s.files) for s in serial.series] == [
        (s.key, s.n_slices, s.files) for s in pooled.series
    ]
    assert [s.series_number for s in serial.series] == list(range(1, 9))


def test_single_file_root_and_missing_root(tmp_path: Path) -> None:
    files = _write(_volume((6, 5, 3)), tmp_path)
    idx = index_dicom(files[0])
    assert idx.n_files == 1 and idx.series[0].n_slices == 1
    with pytest.raises(DicomReadError, match="no such"):
        index_dicom(tmp_path / "nope")
    shutil.rmtree(tmp_path)


def test_convert_dicom_writes_nifti_and_sidecar(tmp_path: Path) -> None:
    import json

    from bmeseg.errors import OutputExistsError
    from bmeseg.io.convert import convert_dicom
    from bmeseg.io.nifti import read_nifti

    vol = _volume((8, 6, 5))
    uid = new_uid("convert")
    _write(vol, tmp_path / "in", names=[f"a{k}" for k in range(5)], series_uid=uid, echo_number=1,
           echo_time_ms=11.0, series_description="pd+t2 tse/sag", inversion_time_ms=None)
    _write(vol, tmp_path / "in", names=[f"b{k}" for k in range(5)], series_uid=uid, echo_number=2,
           echo_time_ms=92.0, series_description="pd+t2 tse/sag")
    missing = _write(_volume((8, 6, 4)), tmp_path / "in" / "gap", series_number=9, series_description="gap")
    missing[1].unlink()  # a series with a missing slice is logged and not converted
    result = convert_dicom(tmp_path / "in", tmp_path / "out")
    out = result.paths
    assert [p.name for p in out] == ["3_pd_t2_tse_sag_echo1.nii.gz", "3_pd_t2_tse_sag_echo2.nii.gz"]
    assert [w.shape for w in result.written] == [vol.shape, vol.shape]
    ((label, reason),) = result.skipped_series  # the gap series: skipped, with the reason
    assert '#9 "gap"' in label and "not uniform" in reason
    back = read_nifti(out[1])
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    np.testing.assert_allclose(back.array, vol.array, atol=_quantum(vol))
    side = json.loads((tmp_path / "out" / "3_pd_t2_tse_sag_echo2.json").read_text())
    assert side["EchoTime"] == pytest.approx(0.092)
    assert side["RepetitionTime"] == pytest.approx(0.6)
    assert side["SeriesNumber"] == 3
    assert side["SeriesInstanceUID"] == uid
    assert side["ImageType"] == ["ORIGINAL", "PRIMARY", "M", "ND"]
    assert side["MagneticFieldStrength"] == 1.5
    assert "InversionTime" not in side
    with pytest.raises(OutputExistsError):
        convert_dicom(tmp_path / "in", tmp_path / "out")
    assert len(convert_dicom(tmp_path / "in", tmp_path / "out", overwrite=True).written) == 2
    with pytest.raises(DicomReadError, match="no DICOM image"):
        convert_dicom(tmp_path / "out", tmp_path / "out2")  # NIfTI + JSON only
