"""DICOM study loading: index a folder from headers, group into series, assemble volumes.

Two steps, kept apart so that choosing series never decodes pixels:

1. :func:`index_dicom` walks a folder, reads headers only
   (``stop_before_pixels=True`` and a ``specific_tags`` list), and groups the
   frames into :class:`SeriesInfo` records. A SeriesInstanceUID that mixes
   orientations, echoes, image types or matrices is split; nothing is dropped
   (classifying localizers etc. is :mod:`bmeseg.series`' job).
2. :func:`load_series` decodes one series into a float32
   :class:`~bmeseg.volume.Volume` (``array[i, j, k]``, voxel -> LPS affine).

Rules applied by :func:`load_series`
------------------------------------
* Slices are ordered by their position projected on the slice normal
  ``n = row x col`` (cross product of the ImageOrientationPatient vectors),
  never by file name or InstanceNumber. The direction matrix is
  ``[row, col, n]``: a proper rotation, and ``spacing_mm[2] > 0``.
* The slice spacing comes from the positions (not SliceThickness). A gap that
  deviates from the median spacing by more than ``min(10 % of the median,
  0.1 mm)`` (a missing slice, non-uniform stack) raises
  :class:`~bmeseg.errors.GeometryError`; so does a stack whose positions do
  not run along the normal (gantry tilt, shear).
* Repeated positions: copies whose rescaled pixels are identical are dropped
  with a warning. When every position holds the same number ``m`` of
  different images (``m`` repeated volumes: dynamics, averages stored apart,
  time series), the first volume (lowest TemporalPositionIndex /
  AcquisitionNumber / InstanceNumber) is kept, with a warning. Any other mix of
  different images at one position raises :class:`~bmeseg.errors.DicomReadError`.
* RescaleSlope/RescaleIntercept are applied per slice (per frame for enhanced
  files, from the Pixel Value Transformation functional group). Values are the
  standard DICOM rescaled values ("modality LUT"). Philips' private floating-point
  scaling (ScaleSlope 2005,100E, what dcm2niix applies and records as
  ``PhilipsScaleSlope``) and RealWorldValueMapping items are *not* applied: they
  change every value of a series by one factor, which bmeseg's ratio-to-normal-
  marrow measures do not see, and the DICOM value is what every viewer shows.
* MONOCHROME1 images (minimum = white) are inverted so that higher values are
  brighter, like every MONOCHROME2 MR image: ``v' = rescale(lo) + rescale(hi) - v``
  where ``[lo, hi]`` is the stored range allowed by BitsStored/PixelRepresentation
  (the value range is kept); a warning records it.
* Compressed pixel data are decoded by pydicom's plugins (extra ``codecs``).
  Lossless syntaxes (RLE, JPEG lossless, JPEG-LS lossless, JPEG 2000 lossless,
  HTJ2K lossless) decode to exactly the uncompressed values; lossy JPEG baseline,
  JPEG-LS near-lossless and JPEG 2000 decode; 12-bit JPEG extended works when the
  installed decoder accepts the file (pylibjpeg-libjpeg refuses some; python-gdcm
  is the fallback). A missing decoder raises
  :class:`~bmeseg.errors.MissingDependencyError` naming the package; a syntax no
  pydicom plugin decodes (e.g. JPEG XL, private ones) raises
  :class:`~bmeseg.errors.DicomReadError` naming the syntax and the file.
  Deflated Explicit VR Little Endian files are inflated by pydicom.
* Siemens mosaics are detected at index time (``is_mosaic``) and cut into
  slices at load time (tile count from NumberOfImagesInMosaic or the CSA
  header, slice direction from the CSA SliceNormalVector).

Warnings about the data go to ``Volume.meta["warnings"]`` (and the log).
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..errors import DicomReadError, GeometryError, MissingDependencyError
from ..volume import Geometry, Volume

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.tag import BaseTag

__all__ = ["DicomIndex", "SeriesInfo", "index_dicom", "load_series"]

logger = logging.getLogger(__name__)

#: position tolerance (mm) under which two slices are "at the same position"
_SAME_POSITION_MM = 0.01
#: orientation cosines are compared after rounding to this many decimals
_IOP_DECIMALS = 3
#: files per task handed to a worker process
_CHUNK = 64
#: below this many files the index is built in-process (pool start-up costs more)
_MIN_FILES_FOR_POOL = 400

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_ENCAPSULATED_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"

# Tags read at index time. Functional-group sequences are only present in
# enhanced (multi-frame) files, so asking for them costs nothing for classic ones.
_INDEX_KEYWORDS: list[str | int] = [
    "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
    "ProtocolName", "SequenceName", "Modality", "Manufacturer", "MagneticFieldStrength",
    "ScanningSequence", "SequenceVariant", "ScanOptions", "ImageType", "RepetitionTime", "EchoTime",
    "InversionTime", "FlipAngle", "EchoNumbers", "ImageOrientationPatient", "ImagePositionPatient",
    "Rows", "Columns", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices", "FrameOfReferenceUID",
    "PatientID", "StudyDate", "InstanceNumber", "AcquisitionNumber", "NumberOfFrames",
    "BitsAllocated", "SamplesPerPixel", "TemporalPositionIdentifier",
    "PulseSequenceName", "EchoPulseSequence", "InversionRecovery", "EchoPlanarPulseSequence",
    "SpectrallySelectedSuppression", "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence", 0x0019100A,  # Siemens NumberOfImagesInMosaic
]


# --------------------------------------------------------------------------- public records


@dataclass(frozen=True)
class SeriesInfo:
    """Header facts of one image series (after splitting by orientation/echo/etc.).

    Times in ms, field strength in T, spacing in mm. Missing header values are ``None``.
    """

    key: str  # unique within an index: SeriesInstanceUID, plus a suffix when split (e.g. "…#echo2")
    study_instance_uid: str
    series_instance_uid: str
    series_number: int | None
    series_description: str
    protocol_name: str
    sequence_name: str
    modality: str
    manufacturer: str
    field_strength_t: float | None
    scanning_sequence: tuple[str, ...]  # e.g. ("SE", "IR")
    sequence_variant: tuple[str, ...]
    scan_options: tuple[str, ...]
    image_type: tuple[str, ...]  # upper-case values, e.g. ("ORIGINAL", "PRIMARY", "M", "ND")
    repetition_time_ms: float | None
    echo_time_ms: float | None
    inversion_time_ms: float | None
    flip_angle_deg: float | None
    echo_number: int | None
    image_orientation: tuple[float, ...] | None  # 6 direction cosines
    rows: int | None
    columns: int | None
    pixel_spacing_mm: tuple[float, float] | None  # (row spacing, column spacing) as in DICOM
    slice_thickness_mm: float | None
    n_slices: int  # number of distinct slice positions (frames for enhanced)
    frame_of_reference_uid: str
    patient_id: str
    study_date: str
    files: tuple[Path, ...]  # files holding this series' frames
    is_enhanced: bool = False
    is_mosaic: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)
    #: for enhanced files: per entry of ``files``, the 0-based frame numbers in this series
    #: (empty for classic single-frame series)
    frames: tuple[tuple[int, ...], ...] = ()
    #: number of frames (classic: files) in the series, repeated positions included
    n_frames: int = 0

    @property
    def plane(self) -> str:
        """'axial', 'coronal', 'sagittal' (from the slice normal), or 'unknown'."""
        if not self.image_orientation or len(self.image_orientation) != 6:
            return "unknown"
        r = np.asarray(self.image_orientation[:3])
        c = np.asarray(self.image_orientation[3:])
        n = np.cross(r, c)
        return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(n)))]

    @property
    def label(self) -> str:
        """Human-readable name for messages: ``'#5 "t1_tse_cor" (1.2.3…)'``."""
        num = "?" if self.series_number is None else str(self.series_number)
        return f'#{num} "{self.series_description}" ({self.key})'


@dataclass(frozen=True)
class DicomIndex:
    """Result of :func:`index_dicom`: the series found and the files skipped (with reasons)."""

    root: Path
    series: tuple[SeriesInfo, ...]
    skipped: tuple[tuple[Path, str], ...] = ()
    n_files: int = 0


# --------------------------------------------------------------------------- header records


@dataclass(frozen=True, slots=True)
class _Frame:
    """One image (a classic file or one frame of an enhanced file), header facts only."""

    path: str
    frame: int | None  # 0-based frame number in an enhanced file; None for classic
    series_uid: str
    common: _Common
    iop: tuple[float, ...] | None
    ipp: tuple[float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    image_type: tuple[str, ...]
    echo_number: int | None
    echo_time: float | None
    repetition_time: float | None
    inversion_time: float | None
    flip_angle: float | None
    rows: int | None
    columns: int | None
    instance_number: int | None
    order: tuple[float, ...]  # (temporal/acquisition, instance, frame) for tie-breaking


@dataclass(frozen=True, slots=True)
class _Common:
    """Facts shared by every frame of one file."""

    study_uid: str
    series_number: int | None
    series_description: str
    protocol_name: str
    sequence_name: str
    modality: str
    manufacturer: str
    field_strength: float | None
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    scan_options: tuple[str, ...]
    frame_of_reference_uid: str
    patient_id: str
    study_date: str
    is_enhanced: bool
    is_mosaic: bool
    mosaic_n: int | None = None  # Siemens NumberOfImagesInMosaic (0019,100A)


# --------------------------------------------------------------------------- small value helpers


# Top-level tags with plain ASCII values that the indexer decodes itself from the raw
# bytes: pydicom's general value conversion dominates header-reading time otherwise.
_FAST_VR = {
    "SOPClassUID": "UI", "StudyInstanceUID": "UI", "SeriesInstanceUID": "UI", "FrameOfReferenceUID": "UI",
    "SeriesNumber": "IS", "InstanceNumber": "IS", "AcquisitionNumber": "IS", "NumberOfFrames": "IS",
    "EchoNumbers": "IS", "TemporalPositionIdentifier": "IS", "Modality": "CS", "ScanningSequence": "CS",
    "SequenceVariant": "CS", "ScanOptions": "CS", "ImageType": "CS", "StudyDate": "DA",
    "MagneticFieldStrength": "DS", "RepetitionTime": "DS", "EchoTime": "DS", "InversionTime": "DS",
    "FlipAngle": "DS", "ImageOrientationPatient": "DS", "ImagePositionPatient": "DS", "PixelSpacing": "DS",
    "SliceThickness": "DS", "Rows": "US", "Columns": "US", "BitsAllocated": "US", "SamplesPerPixel": "US",
}


@functools.cache
def _fast_tags() -> dict[str, int]:
    from pydicom.datadict import tag_for_keyword

    return {kw: int(tag_for_keyword(kw) or 0) for kw in _FAST_VR}


def _raw_value(ds: Any, keyword: str) -> Any:
    """Decode a raw (unconverted) ASCII/US element; ``NotImplemented`` when not applicable."""
    tag = _fast_tags().get(keyword)
    if tag is None or tag not in ds:
        return NotImplemented
    elem = ds.get_item(tag)
    if not getattr(elem, "is_raw", False) or elem.value is None:
        return NotImplemented
    raw: bytes = elem.value
    if _FAST_VR[keyword] == "US":
        if len(raw) < 2:
            return None
        return int.from_bytes(raw[:2], "little" if elem.is_little_endian else "big")
    text = raw.decode("ascii", "replace").strip(" \x00")
    if not text:
        return None
    parts = [t.strip(" \x00") for t in text.split("\\")]
    return parts[0] if len(parts) == 1 else parts


def _get(ds: Any, keyword: str, default: Any = None) -> Any:
    if keyword in _FAST_VR and ds is not None:
        try:
            fast = _raw_value(ds, keyword)
        except Exception:
            fast = NotImplemented
        if fast is not NotImplemented:
            return default if fast is None else fast
    try:
        value = ds.get(keyword, default)
    except Exception:  # a malformed value (bad DS/IS) is treated as missing
        return default
    return default if value is None or value == "" else value


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, (str, bytes, int, float)) and hasattr(value, "__len__"):
            value = value[0]
        f = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return f if np.isfinite(f) else None


def _int(value: Any) -> int | None:
    f = _float(value)
    return None if f is None else round(f)


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None or value == "":
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(out) != n or not all(np.isfinite(out)):
        return None
    return out


def _strs(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, (str, bytes)):
        value = [value]
    return tuple(str(v).strip().upper() for v in value if str(v).strip())


def _str(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _seq_item(ds: Any, keyword: str) -> Any:
    """First item of sequence ``keyword`` in ``ds``, or None."""
    if ds is None:
        return None
    seq = _get(ds, keyword)
    if not seq:
        return None
    try:
        return seq[0]
    except (IndexError, TypeError):
        return None


def _fg(frame_item: Any, shared_item: Any, keyword: str) -> Any:
    """Functional group ``keyword``: the per-frame item, else the shared one."""
    item = _seq_item(frame_item, keyword)
    return item if item is not None else _seq_item(shared_item, keyword)


# --------------------------------------------------------------------------- reading headers


@functools.cache
def _index_tags() -> list[BaseTag]:
    from pydicom.tag import Tag

    return [Tag(t) for t in _INDEX_KEYWORDS]


def _read_file(path: str) -> tuple[list[_Frame], str | None]:
    """Read one file's header. Returns (frames, skip reason); never raises."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fp:
            head = fp.read(132)
            if len(head) < 132 or head[128:132] != b"DICM":
                return [], "not a DICOM file (no DICM marker)"
            fp.seek(0)
            ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_index_tags())
            pixel_offset = fp.tell()
            encapsulated = _encapsulated_state(fp, pixel_offset, size)
    except InvalidDicomError as exc:
        return [], f"not a DICOM file ({exc})"
    except Exception as exc:  # truncated or corrupt headers raise many types
        return [], f"unreadable DICOM header ({type(exc).__name__}: {exc})"

    meta = getattr(ds, "file_meta", None)
    sop_class = _str(_get(meta, "MediaStorageSOPClassUID")) or _str(_get(ds, "SOPClassUID"))
    if sop_class == _DICOMDIR_SOP_CLASS:
        return [], "DICOMDIR (media directory, not an image)"
    series_uid = _str(_get(ds, "SeriesInstanceUID"))
    rows, columns = _int(_get(ds, "Rows")), _int(_get(ds, "Columns"))
    if not rows or not columns:
        return [], "no image (no Rows/Columns: not an image object)"
    if not series_uid:
        return [], "no SeriesInstanceUID"

    # truncated pixel data: compare what is left in the file with what the header promises
    ts = _get(meta, "TransferSyntaxUID")
    n_frames = _int(_get(ds, "NumberOfFrames")) or 1
    if str(ts) == _DEFLATED:  # the dataset is one zlib stream: inflate it to check the pixels
        return _deflated_frames(path, series_uid, rows, columns, n_frames)
    if pixel_offset >= size:
        return [], "no pixel data (truncated, or a header-only object)"
    # encapsulated (compressed) pixel data is recognised by its undefined length, whatever the
    # transfer syntax says (private compressed syntaxes are not known to pydicom as compressed)
    if encapsulated is not None:
        if not encapsulated:
            return [], "truncated: encapsulated pixel data ends before its sequence delimiter"
    else:
        bits = _int(_get(ds, "BitsAllocated")) or 16
        spp = _int(_get(ds, "SamplesPerPixel")) or 1
        expected = (rows * columns * n_frames * spp * bits + 7) // 8
        if size - pixel_offset - 8 < expected:
            return [], (
                f"truncated: pixel data holds {max(size - pixel_offset - 8, 0)} bytes, "
                f"header promises {expected}"
            )
    try:
        return _frames_from_header(ds, path, series_uid, rows, columns, n_frames), None
    except Exception as exc:  # defensive: odd headers must not stop the walk
        return [], f"cannot interpret header ({type(exc).__name__}: {exc})"


def _deflated_frames(
    path: str, series_uid: str, rows: int, columns: int, n_frames: int
) -> tuple[list[_Frame], str | None]:
    """Index a Deflated Explicit VR Little Endian file (read whole: the stream cannot be sought)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        data = ds.get("PixelData")
        n_bytes = len(data) if data is not None else 0
    except Exception as exc:  # a truncated zlib stream
        return [], f"truncated or corrupt deflated data ({type(exc).__name__}: {exc})"
    bits = _int(_get(ds, "BitsAllocated")) or 16
    expected = (rows * columns * n_frames * (_int(_get(ds, "SamplesPerPixel")) or 1) * bits + 7) // 8
    if n_bytes < expected:
        return [], f"truncated: pixel data holds {n_bytes} bytes, header promises {expected}"
    try:
        return _frames_from_header(ds, path, series_uid, rows, columns, n_frames), None
    except Exception as exc:  # defensive: odd headers must not stop the walk
        return [], f"cannot interpret header ({type(exc).__name__}: {exc})"


def _encapsulated_state(fp: Any, offset: int, size: int) -> bool | None:
    """None if the element at ``offset`` is not encapsulated (little-endian) PixelData;
    else whether its fragments run complete to the sequence delimiter.

    Walks the item headers of the undefined-length PixelData element, seeking
    over each fragment. Native pixel data are checked by size instead.
    """
    import struct

    fp.seek(offset)
    header = fp.read(12)
    if len(header) < 12 or header[:4] != b"\xe0\x7f\x10\x00" or header[8:12] != b"\xff\xff\xff\xff":
        return None
    pos = offset + 12
    while pos + 8 <= size:
        fp.seek(pos)
        group, elem, length = struct.unpack("<HHI", fp.read(8))
        if (group, elem) == (0xFFFE, 0xE0DD):
            return True
        if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            return False
        pos += 8 + length
    return False


def _frames_from_header(
    ds: Any, path: str, series_uid: str, rows: int, columns: int, n_frames: int
) -> list[_Frame]:
    image_type = _strs(_get(ds, "ImageType"))
    shared = _seq_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence")
    is_enhanced = shared is not None or bool(per_frame)
    is_mosaic = "MOSAIC" in image_type

    scanning = _strs(_get(ds, "ScanningSequence"))
    variant = _strs(_get(ds, "SequenceVariant"))
    options = _strs(_get(ds, "ScanOptions"))
    sequence_name = _str(_get(ds, "SequenceName"))
    if is_enhanced:
        scanning, options, sequence_name = _enhanced_sequence_cues(ds, shared, scanning, options, sequence_name)

    common = _Common(
        study_uid=_str(_get(ds, "StudyInstanceUID")),
        series_number=_int(_get(ds, "SeriesNumber")),
        series_description=_str(_get(ds, "SeriesDescription")),
        protocol_name=_str(_get(ds, "ProtocolName")),
        sequence_name=sequence_name,
        modality=_str(_get(ds, "Modality")),
        manufacturer=_str(_get(ds, "Manufacturer")),
        field_strength=_float(_get(ds, "MagneticFieldStrength")),
        scanning_sequence=scanning,
        sequence_variant=variant,
        scan_options=options,
        frame_of_reference_uid=_str(_get(ds, "FrameOfReferenceUID")),
        patient_id=_str(_get(ds, "PatientID")),
        study_date=_str(_get(ds, "StudyDate")),
        is_enhanced=is_enhanced,
        is_mosaic=is_mosaic,
        mosaic_n=_mosaic_count(ds) if is_mosaic else None,
    )
    instance = _int(_get(ds, "InstanceNumber"))
    acq = _int(_get(ds, "AcquisitionNumber"))
    temporal = _int(_get(ds, "TemporalPositionIdentifier"))
    base: dict[str, Any] = {
        "path": path,
        "series_uid": series_uid,
        "common": common,
        "rows": rows,
        "columns": columns,
        "instance_number": instance,
    }
    if not is_enhanced:
        return [
            _Frame(
                frame=None,
                iop=_floats(_get(ds, "ImageOrientationPatient"), 6),
                ipp=_floats(_get(ds, "ImagePositionPatient"), 3),  # type: ignore[arg-type]
                pixel_spacing=_floats(_get(ds, "PixelSpacing"), 2),  # type: ignore[arg-type]
                slice_thickness=_float(_get(ds, "SliceThickness")),
                image_type=image_type,
                echo_number=_int(_get(ds, "EchoNumbers")),
                echo_time=_float(_get(ds, "EchoTime")),
                repetition_time=_float(_get(ds, "RepetitionTime")),
                inversion_time=_float(_get(ds, "InversionTime")),
                flip_angle=_float(_get(ds, "FlipAngle")),
                order=(float(temporal or acq or 0), float(instance or 0), 0.0),
                **base,
            )
        ]
    frames = []
    items = list(per_frame) if per_frame else [None] * n_frames
    for f, item in enumerate(items[:n_frames]):
        g = _enhanced_frame_geometry(item, shared)
        t = _enhanced_frame_timing(ds, item, shared)
        frame_type = _fg(item, shared, "MRImageFrameTypeSequence")
        ftype = _strs(_get(frame_type, "FrameType")) if frame_type is not None else ()
        content = _seq_item(item, "FrameContentSequence")
        tpos = _int(_get(content, "TemporalPositionIndex")) if content is not None else None
        frames.append(
            _Frame(
                frame=f,
                iop=g[0],
                ipp=g[1],
                pixel_spacing=g[2],
                slice_thickness=g[3],
                image_type=ftype or image_type,
                echo_number=None,
                echo_time=t[0],
                repetition_time=t[1],
                inversion_time=t[2],
                flip_angle=t[3],
                order=(float(tpos or temporal or acq or 0), float(instance or 0), float(f)),
                **base,
            )
        )
    return frames


def _mosaic_count(ds: Any) -> int | None:
    """Siemens (0019,100A) NumberOfImagesInMosaic, whatever VR the reader gave it."""
    elem = ds.get(0x0019100A)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        return int.from_bytes(value[:2], "little") if len(value) >= 2 else None
    return _int(value)


def _enhanced_frame_geometry(
    item: Any, shared: Any
) -> tuple[tuple[float, ...] | None, Any, Any, float | None]:
    ori = _fg(item, shared, "PlaneOrientationSequence")
    pos = _fg(item, shared, "PlanePositionSequence")
    pix = _fg(item, shared, "PixelMeasuresSequence")
    iop = _floats(_get(ori, "ImageOrientationPatient"), 6) if ori is not None else None
    ipp = _floats(_get(pos, "ImagePositionPatient"), 3) if pos is not None else None
    ps = _floats(_get(pix, "PixelSpacing"), 2) if pix is not None else None
    thick = _float(_get(pix, "SliceThickness")) if pix is not None else None
    return iop, ipp, ps, thick


def _enhanced_frame_timing(
    ds: Any, item: Any, shared: Any
) -> tuple[float | None, float | None, float | None, float | None]:
    """(TE, TR, TI, flip angle) of one enhanced frame; classic tags as a fallback."""
    timing = _fg(item, shared, "MRTimingAndRelatedParametersSequence")
    echo = _fg(item, shared, "MREchoSequence")
    modifier = _fg(item, shared, "MRModifierSequence")
    te = _float(_get(echo, "EffectiveEchoTime")) if echo is not None else None
    tr = _float(_get(timing, "RepetitionTime")) if timing is not None else None
    flip = _float(_get(timing, "FlipAngle")) if timing is not None else None
    ti = _float(_get(modifier, "InversionTimes")) if modifier is not None else None
    return (
        te if te is not None else _float(_get(ds, "EchoTime")),
        tr if tr is not None else _float(_get(ds, "RepetitionTime")),
        ti if ti is not None else _float(_get(ds, "InversionTime")),
        flip if flip is not None else _float(_get(ds, "FlipAngle")),
    )


def _enhanced_sequence_cues(
    ds: Any, shared: Any, scanning: tuple[str, ...], options: tuple[str, ...], sequence_name: str
) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """Classic ScanningSequence/ScanOptions equivalents from the MR Pulse Sequence module."""
    modifier = _seq_item(shared, "MRModifierSequence")
    echo_pulse = _str(_get(ds, "EchoPulseSequence")).upper()
    inversion = _str(_get(ds, "InversionRecovery") or _get(modifier, "InversionRecovery")).upper()
    epi = _str(_get(ds, "EchoPlanarPulseSequence")).upper()
    fat = _str(_get(ds, "SpectrallySelectedSuppression")).upper()
    if not scanning:
        seq: list[str] = []
        if echo_pulse in ("SPIN", "BOTH"):
            seq.append("SE")
        if echo_pulse in ("GRADIENT", "BOTH"):
            seq.append("GR")
        if inversion == "YES":
            seq.append("IR")
        if epi == "YES":
            seq.append("EP")
        scanning = tuple(seq)
    if fat in ("FAT", "FAT_AND_WATER") and "FS" not in options:
        options = (*options, "FS")
    if not sequence_name:
        sequence_name = _str(_get(ds, "PulseSequenceName"))
    return scanning, options, sequence_name


def _read_chunk(paths: Sequence[str]) -> list[tuple[str, list[_Frame], str | None]]:
    return [(p, *_read_file(p)) for p in paths]


# --------------------------------------------------------------------------- walking and grouping


def _walk(root: Path) -> Iterator[str]:
    """All regular files under ``root`` (sorted, hidden files included), depth first."""
    stack = [str(root)]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            logger.warning("cannot list %s: %s", d, exc)
            continue
        subdirs = []
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    subdirs.append(e.path)
                elif e.is_file():
                    yield e.path
            except OSError:
                continue
        stack.extend(reversed(subdirs))


def index_dicom(
    root: str | os.PathLike[str], *, jobs: int | None = None, progress: bool = False
) -> DicomIndex:
    """Index every DICOM image under ``root`` from headers only, grouped into series.

    Parameters
    ----------
    root : path
        A folder (searched recursively; any file names, any nesting) or one file.
    jobs : int, optional
        Worker processes for header reading. Default: one per CPU (at most 8)
        when there are more than a few hundred files, else in-process. ``1``
        forces in-process reading.
    progress : bool
        Show a progress bar (tqdm, if installed) or log progress.

    Returns
    -------
    DicomIndex
        Series sorted by (study, series number, key); ``skipped`` lists every
        file that is not a usable DICOM image with the reason (non-DICOM files,
        DICOMDIR, truncated or corrupt files, non-image objects).

    Notes
    -----
    A SeriesInstanceUID is split when its images differ in orientation,
    echo (number or time), image type or matrix; the keys of the parts get a
    suffix (``#ori2``, ``#echo2``, ``#type2``, ``#matrix2``).
    """
    root_path = Path(root)
    if not root_path.exists():
        raise DicomReadError(f"{root_path}: no such file or folder")
    paths = [str(root_path)] if root_path.is_file() else list(_walk(root_path))
    n = len(paths)
    if jobs is None:
        jobs = min(os.cpu_count() or 1, 8) if n >= _MIN_FILES_FOR_POOL else 1
    results = _read_all(paths, max(1, int(jobs)), progress)

    skipped: list[tuple[Path, str]] = []
    frames: list[_Frame] = []
    for path, fr, reason in results:
        if reason is not None:
            skipped.append((Path(path), reason))
            if not reason.startswith("not a DICOM") and not reason.startswith("DICOMDIR"):
                logger.warning("skipping %s: %s", path, reason)
            else:
                logger.debug("skipping %s: %s", path, reason)
        else:
            frames.extend(fr)
    series = _group(frames)
    logger.info("indexed %d files under %s: %d series, %d skipped", n, root_path, len(series), len(skipped))
    return DicomIndex(root=root_path, series=tuple(series), skipped=tuple(skipped), n_files=n)


def _read_all(
    paths: list[str], jobs: int, progress: bool
) -> list[tuple[str, list[_Frame], str | None]]:
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    bar = _progress_bar(len(paths)) if progress else None
    out: list[tuple[str, list[_Frame], str | None]] = []
    try:
        if jobs <= 1 or len(chunks) <= 1:
            results: Iterable[list[tuple[str, list[_Frame], str | None]]] = map(_read_chunk, chunks)
            for res in results:
                out.extend(res)
                _advance(bar, len(res), len(out), len(paths))
        else:
            for res in _pool_map(chunks, jobs):
                out.extend(res)
                _advance(bar, len(res), len(out), len(paths))
    finally:
        if bar is not None:
            bar.close()
    return out


def _pool_map(
    chunks: list[list[str]], jobs: int
) -> Iterator[list[tuple[str, list[_Frame], str | None]]]:
    """Read chunks in worker processes; fall back to this process if no pool can run.

    ``fork`` is used on Linux when this process runs no other thread (cheap, and it
    needs no importable ``__main__``); otherwise ``forkserver``/``spawn``, which need
    the main module to be importable (not the case for ``python -`` or some REPLs).
    """
    import multiprocessing as mp
    import sys
    import threading
    from concurrent.futures.process import BrokenProcessPool

    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        method = "fork"
    elif main_file is None or not os.path.exists(main_file):
        logger.info("reading headers in-process: worker processes cannot re-import __main__ here")
        yield from map(_read_chunk, chunks)
        return
    else:
        method = "forkserver" if os.name == "posix" else "spawn"
    done = 0
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context(method)) as pool:
            for res in pool.map(_read_chunk, chunks):
                done += 1
                yield res
    except (BrokenProcessPool, OSError) as exc:
        logger.warning("worker processes failed (%s); reading the remaining headers in-process", exc)
        yield from map(_read_chunk, chunks[done:])


def _progress_bar(total: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="file", desc="indexing DICOM")


def _advance(bar: Any, step: int, done: int, total: int) -> None:
    if bar is not None:
        bar.update(step)
    elif done % (_CHUNK * 16) < step or done == total:
        logger.info("indexed %d/%d files", done, total)


def _iop_key(iop: tuple[float, ...] | None) -> tuple[float, ...] | None:
    return None if iop is None else tuple(round(v, _IOP_DECIMALS) + 0.0 for v in iop)


def _group(frames: list[_Frame]) -> list[SeriesInfo]:
    by_uid: dict[str, list[_Frame]] = defaultdict(list)
    for f in frames:
        by_uid[f.series_uid].append(f)
    out: list[SeriesInfo] = []
    for uid, fs in by_uid.items():
        fs.sort(key=lambda f: (f.order, f.path, f.frame or 0))
        dims: dict[str, list[Any]] = {
            "ori": [_iop_key(f.iop) for f in fs],
            "echo": [(f.echo_number, None if f.echo_time is None else round(f.echo_time, 2)) for f in fs],
            "type": [f.image_type for f in fs],
            "matrix": [(f.rows, f.columns) for f in fs],
        }
        varying = [name for name, vals in dims.items() if len(set(vals)) > 1]
        # number each distinct value of a varying dimension in order of first appearance
        numbering: dict[str, dict[Any, int]] = {}
        for name in varying:
            seen: dict[Any, int] = {}
            values = dims[name]
            if name == "echo":  # echo numbers are meaningful: order by (number, time)
                values = sorted(set(values), key=lambda v: (v[0] or 0, v[1] or 0.0))
            for v in values:
                seen.setdefault(v, len(seen) + 1)
            numbering[name] = seen
        parts: dict[str, list[_Frame]] = defaultdict(list)
        for idx, f in enumerate(fs):
            suffix = ""
            for name in varying:
                value = dims[name][idx]
                num = numbering[name][value]
                if name == "echo" and value[0] is not None and len(
                    {v[0] for v in numbering[name]}
                ) == len(numbering[name]):
                    num = value[0]
                suffix += f"#{name}{num}"
            parts[uid + suffix].append(f)
        for key, members in parts.items():
            out.append(_series_info(key, uid, members))
    out.sort(key=lambda s: (s.study_instance_uid, s.series_number if s.series_number is not None else -1, s.key))
    return out


def _series_info(key: str, uid: str, fs: list[_Frame]) -> SeriesInfo:
    first = fs[0]
    c = first.common
    files: list[str] = []
    frame_map: dict[str, list[int]] = defaultdict(list)
    for f in fs:
        if f.path not in frame_map:
            files.append(f.path)
        if f.frame is not None:
            frame_map[f.path].append(f.frame)
        else:
            frame_map[f.path]
    positions = {tuple(np.round(np.asarray(f.ipp) / _SAME_POSITION_MM).astype(int)) for f in fs if f.ipp}
    warnings: list[str] = []
    if any(f.ipp is None or f.iop is None for f in fs):
        warnings.append("some images have no ImagePositionPatient/ImageOrientationPatient")
    if len(positions) and len(fs) > len(positions):
        warnings.append(f"{len(fs)} images at {len(positions)} distinct positions (repeated positions)")
    for name, values in (
        ("RepetitionTime", {f.repetition_time for f in fs}),
        ("InversionTime", {f.inversion_time for f in fs}),
    ):
        if len(values) > 1:
            warnings.append(f"{name} varies within the series: {sorted(v for v in values if v is not None)}")
    is_enhanced = c.is_enhanced
    return SeriesInfo(
        key=key,
        study_instance_uid=c.study_uid,
        series_instance_uid=uid,
        series_number=c.series_number,
        series_description=c.series_description,
        protocol_name=c.protocol_name,
        sequence_name=c.sequence_name,
        modality=c.modality,
        manufacturer=c.manufacturer,
        field_strength_t=c.field_strength,
        scanning_sequence=c.scanning_sequence,
        sequence_variant=c.sequence_variant,
        scan_options=c.scan_options,
        image_type=first.image_type,
        repetition_time_ms=first.repetition_time,
        echo_time_ms=first.echo_time,
        inversion_time_ms=first.inversion_time,
        flip_angle_deg=first.flip_angle,
        echo_number=first.echo_number,
        image_orientation=first.iop,
        rows=first.rows,
        columns=first.columns,
        pixel_spacing_mm=first.pixel_spacing,
        slice_thickness_mm=first.slice_thickness,
        n_slices=(len(positions) if positions else len(fs)) * (c.mosaic_n or 1),
        frame_of_reference_uid=c.frame_of_reference_uid,
        patient_id=c.patient_id,
        study_date=c.study_date,
        files=tuple(Path(p) for p in files),
        is_enhanced=is_enhanced,
        is_mosaic=c.is_mosaic,
        warnings=tuple(warnings),
        frames=tuple(tuple(frame_map[p]) for p in files) if is_enhanced else (),
        n_frames=len(fs),
    )


# --------------------------------------------------------------------------- loading pixels


@dataclass
class _Slice:
    """One decoded image with its geometry, in the loader."""

    pixels: NDArray[np.float32]  # (Rows, Columns), rescaled
    iop: NDArray[np.float64]
    ipp: NDArray[np.float64]
    pixel_spacing: tuple[float, float]
    order: tuple[Any, ...]
    source: str  # "file" or "file[frame]" for messages
    inverted: bool = False  # MONOCHROME1 stored values were inverted


def load_series(info: SeriesInfo) -> Volume:
    """Decode a series into a float32 :class:`~bmeseg.volume.Volume`.

    Parameters
    ----------
    info : SeriesInfo
        From :func:`index_dicom`.

    Returns
    -------
    Volume
        ``array[i, j, k]`` with shape ``(Columns, Rows, n_slices)``; float32
        values after RescaleSlope/RescaleIntercept; affine voxel -> LPS mm.
        ``meta`` holds the series identity, acquisition parameters, the number
        of files and ``warnings`` (list of str).

    Raises
    ------
    DicomReadError
        Unreadable files, mosaics that cannot be unpacked, undecodable pixels,
        conflicting images at one position.
    GeometryError
        Missing slices / non-uniform spacing, sheared or tilted stacks,
        inconsistent orientation or pixel spacing.
    MissingDependencyError
        Compressed pixel data whose codec is not installed.
    """
    label = info.label
    if not info.files:
        raise DicomReadError(f"series {label}: no files")
    warnings: list[str] = list(info.warnings)
    slices: list[_Slice] = []
    for i, path in enumerate(info.files):
        frames = info.frames[i] if info.frames else ()
        slices.extend(_decode_file(path, frames, label))

    n_inverted = sum(s.inverted for s in slices)
    if n_inverted:
        warnings.append(
            f"MONOCHROME1 pixel data inverted in {n_inverted} of {len(slices)} image(s) (higher = brighter)"
        )
    slices, dup_warnings = _resolve_repeats(slices, label)
    warnings.extend(dup_warnings)
    geom = _stack_geometry(slices, label, info, warnings)
    # slices are now in +normal order; array[i, j, k] = pixels[j, i]
    array = np.stack([s.pixels.T for s in slices], axis=-1).astype(np.float32, copy=False)
    for w in warnings:
        logger.warning("series %s: %s", label, w)
    meta: dict[str, Any] = {
        "source": "dicom",
        "key": info.key,
        "series_instance_uid": info.series_instance_uid,
        "series_number": info.series_number,
        "series_description": info.series_description,
        "study_instance_uid": info.study_instance_uid,
        "frame_of_reference_uid": info.frame_of_reference_uid,
        "manufacturer": info.manufacturer,
        "field_strength_t": info.field_strength_t,
        "repetition_time_ms": info.repetition_time_ms,
        "echo_time_ms": info.echo_time_ms,
        "inversion_time_ms": info.inversion_time_ms,
        "flip_angle_deg": info.flip_angle_deg,
        "image_type": list(info.image_type),
        "n_files": len(info.files),
        "warnings": warnings,
    }
    return Volume(np.ascontiguousarray(array), geom, meta)


def _decode_file(path: Path, frames: tuple[int, ...], label: str) -> list[_Slice]:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise DicomReadError(f"series {label}: cannot read {path} ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise DicomReadError(f"series {label}: {path} has no pixel data")
    if (_int(_get(ds, "SamplesPerPixel")) or 1) != 1:
        raise DicomReadError(f"series {label}: {path} is a colour image; bmeseg needs grey-scale MR")
    pixels, inverted = _monochrome1_to_2(ds, _pixel_array(ds, path, label))
    slices = _slices_of(ds, pixels, path, frames, label)
    for s in slices:
        s.inverted = inverted
    return slices


def _monochrome1_to_2(ds: Any, pixels: NDArray[Any]) -> tuple[NDArray[Any], bool]:
    """Invert MONOCHROME1 stored values within the BitsStored range (see module docstring)."""
    if _str(_get(ds, "PhotometricInterpretation")).upper() != "MONOCHROME1":
        return pixels, False
    bits = _int(_get(ds, "BitsStored")) or _int(_get(ds, "BitsAllocated")) or 16
    if _int(_get(ds, "PixelRepresentation")) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    if np.issubdtype(pixels.dtype, np.floating):  # float pixel data: no stored range, mirror the data's
        lo, hi = float(np.nanmin(pixels)), float(np.nanmax(pixels))
    return (lo + hi) - pixels.astype(np.float64 if pixels.dtype.kind == "f" else np.int64), True


def _slices_of(ds: Any, pixels: NDArray[Any], path: Path, frames: tuple[int, ...], label: str) -> list[_Slice]:
    if "MOSAIC" in _strs(_get(ds, "ImageType")):
        return _unpack_mosaic(ds, pixels, path, label)
    shared = _seq_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence")
    n_frames = _int(_get(ds, "NumberOfFrames")) or 1
    if n_frames == 1 and pixels.ndim == 2:
        pixels = pixels[None]
    out: list[_Slice] = []
    if shared is None and not per_frame:
        iop = _floats(_get(ds, "ImageOrientationPatient"), 6)
        ipp = _floats(_get(ds, "ImagePositionPatient"), 3)
        ps = _floats(_get(ds, "PixelSpacing"), 2)
        if iop is None or ipp is None or ps is None:
            raise GeometryError(
                f"series {label}: {path} lacks ImageOrientationPatient, ImagePositionPatient "
                "or PixelSpacing; cannot place it in space"
            )
        slope = _float(_get(ds, "RescaleSlope"))
        intercept = _float(_get(ds, "RescaleIntercept"))
        order = (
            _int(_get(ds, "TemporalPositionIdentifier")) or _int(_get(ds, "AcquisitionNumber")) or 0,
            _int(_get(ds, "InstanceNumber")) or 0,
            str(path),
            0,
        )
        for f in range(pixels.shape[0]):
            out.append(
                _Slice(
                    _rescale(pixels[f], slope, intercept),
                    np.asarray(iop),
                    np.asarray(ipp),
                    (ps[0], ps[1]),
                    order,
                    str(path),
                )
            )
        return out
    items = list(per_frame) if per_frame else [None] * n_frames
    wanted = frames or tuple(range(n_frames))
    instance = _int(_get(ds, "InstanceNumber")) or 0
    acq = _int(_get(ds, "AcquisitionNumber")) or 0
    for f in wanted:
        if f >= len(items) or f >= pixels.shape[0]:
            raise DicomReadError(f"series {label}: {path} has no frame {f + 1}")
        item = items[f]
        iop, ipp, ps, _thick = _enhanced_frame_geometry(item, shared)
        if iop is None or ipp is None or ps is None:
            raise GeometryError(
                f"series {label}: {path} frame {f + 1} lacks plane orientation, position or pixel measures"
            )
        pvt = _fg(item, shared, "PixelValueTransformationSequence")
        slope = _float(_get(pvt, "RescaleSlope")) if pvt is not None else None
        intercept = _float(_get(pvt, "RescaleIntercept")) if pvt is not None else None
        if slope is None and intercept is None:
            slope, intercept = _float(_get(ds, "RescaleSlope")), _float(_get(ds, "RescaleIntercept"))
        content = _seq_item(item, "FrameContentSequence")
        tpos = _int(_get(content, "TemporalPositionIndex")) if content is not None else None
        out.append(
            _Slice(
                _rescale(pixels[f], slope, intercept),
                np.asarray(iop),
                np.asarray(ipp),
                (ps[0], ps[1]),
                (tpos or acq, instance, str(path), f),
                f"{path}[frame {f + 1}]",
            )
        )
    return out


def _mosaic_csa(ds: Any) -> tuple[int | None, NDArray[np.float64] | None]:
    """(NumberOfImagesInMosaic, SliceNormalVector) from the Siemens CSA image header."""
    import warnings

    try:
        with warnings.catch_warnings():
            # nibabel.nicom warns on import that its DICOM readers are experimental;
            # only its CSA header parser is used here
            warnings.simplefilter("ignore", UserWarning)
            from nibabel.nicom import csareader

        csa = csareader.get_csa_header(ds, "image")
        if not csa:
            return None, None
        n = csareader.get_n_mosaic(csa)
        normal = csareader.get_slice_normal(csa)
        return (None if n is None else int(n)), (None if normal is None else np.asarray(normal, float))
    except Exception as exc:  # a damaged private header: fall back to public tags
        logger.debug("cannot parse Siemens CSA header: %s", exc)
        return None, None


def _unpack_mosaic(ds: Any, pixels: NDArray[Any], path: Path, label: str) -> list[_Slice]:
    """Cut a Siemens mosaic into slices, each with its true position.

    The mosaic's ImagePositionPatient is the corner of the whole tiled image; the
    first slice's corner is shifted by half the size difference between mosaic
    and tile. Slices follow the CSA SliceNormalVector (which may point against
    ``row x col``, e.g. sagittal), spaced by SpacingBetweenSlices.
    """
    csa_n, csa_normal = _mosaic_csa(ds)
    n = _mosaic_count(ds) or csa_n
    iop = _floats(_get(ds, "ImageOrientationPatient"), 6)
    ipp = _floats(_get(ds, "ImagePositionPatient"), 3)
    ps = _floats(_get(ds, "PixelSpacing"), 2)
    spacing = _float(_get(ds, "SpacingBetweenSlices")) or _float(_get(ds, "SliceThickness"))
    if not n or iop is None or ipp is None or ps is None or not spacing:
        raise DicomReadError(
            f"series {label}: {path} is a Siemens mosaic without NumberOfImagesInMosaic, "
            "orientation, position or slice spacing; cannot unpack it"
        )
    row, col = _orthonormal_pair(np.asarray(iop), label)
    normal = np.cross(row, col)
    if csa_normal is not None and float(csa_normal @ normal) < 0:
        normal = -normal
    grid = int(np.ceil(np.sqrt(n)))
    rows, cols = pixels.shape[-2] // grid, pixels.shape[-1] // grid
    corner = (
        np.asarray(ipp)
        + row * ps[1] * (pixels.shape[-1] - cols) / 2.0
        + col * ps[0] * (pixels.shape[-2] - rows) / 2.0
    )
    slope, intercept = _float(_get(ds, "RescaleSlope")), _float(_get(ds, "RescaleIntercept"))
    base = (
        _int(_get(ds, "AcquisitionNumber")) or 0,
        _int(_get(ds, "InstanceNumber")) or 0,
        str(path),
    )
    out = []
    for k in range(n):
        r0, c0 = (k // grid) * rows, (k % grid) * cols
        tile = pixels.reshape(pixels.shape[-2:])[r0 : r0 + rows, c0 : c0 + cols]
        out.append(
            _Slice(
                _rescale(tile, slope, intercept),
                np.asarray(iop),
                corner + k * spacing * normal,
                (ps[0], ps[1]),
                (*base, k),
                f"{path}[mosaic tile {k + 1}]",
            )
        )
    return out


def _rescale(pix: NDArray[Any], slope: float | None, intercept: float | None) -> NDArray[np.float32]:
    if slope is None and intercept is None:
        return pix.astype(np.float32)
    out = pix.astype(np.float64) * (1.0 if slope is None else slope) + (intercept or 0.0)
    return out.astype(np.float32)


# transfer syntax UID -> the package (extra "codecs") whose pydicom plugin decodes it
_CODEC_PACKAGES = {
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",  # RLE (pydicom also decodes it natively)
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg",  # JPEG baseline (Pillow also decodes it)
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",  # JPEG extended 12-bit
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg",  # JPEG-LS lossless (pyjpegls also decodes it)
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",  # HTJ2K
}
_DECOMPRESS_HINT = "decompress it first, e.g. `gdcmconv --raw IN OUT` or `dcmdjpeg IN OUT`"


def _decoder_state(ts: Any) -> str:
    """'available', 'missing' (pydicom knows a plugin, none installed) or 'unknown' (no plugin exists)."""
    try:
        from pydicom.pixels import get_decoder

        return "available" if get_decoder(ts).is_available else "missing"
    except Exception:  # NotImplementedError: pydicom has no decoder for this syntax
        return "unknown"


def _decoder_available(ts: Any) -> bool:
    return _decoder_state(ts) == "available"


def _pixel_array(ds: Any, path: Path, label: str) -> NDArray[Any]:
    ts = _get(getattr(ds, "file_meta", None), "TransferSyntaxUID")
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        uid = str(ts) if ts is not None else ""
        name = getattr(ts, "name", uid) if ts is not None else "(none)"
        native = uid in ("", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", _DEFLATED)
        state = "available" if native else _decoder_state(ts)
        if state == "missing" or (state != "unknown" and not _decoder_available(ts) and uid in _CODEC_PACKAGES):
            raise MissingDependencyError(
                _CODEC_PACKAGES.get(uid, "pylibjpeg-libjpeg"), "codecs",
                f"Decoding '{name}' pixel data (series {label}, file {path})",
            ) from exc
        if state == "unknown":
            shown = f"'{name}' ({uid})" if name != uid else f"'{uid}'"
            raise DicomReadError(
                f"series {label}: {path} uses transfer syntax {shown}, which no pydicom "
                f"decoder supports; {_DECOMPRESS_HINT}"
            ) from exc
        hint = ""
        if not native:  # a compressed syntax whose installed decoders refused this file
            hint = (
                "; another decoder may read it: pip install python-gdcm (pydicom uses it when "
                f"installed), or {_DECOMPRESS_HINT}"
            )
        raise DicomReadError(
            f"series {label}: cannot decode pixel data of {path} ({type(exc).__name__}: {exc}){hint}"
        ) from exc


def _resolve_repeats(slices: list[_Slice], label: str) -> tuple[list[_Slice], list[str]]:
    """Apply the repeated-position rule (see module docstring)."""
    groups: dict[tuple[int, ...], list[_Slice]] = defaultdict(list)
    for s in slices:
        groups[tuple(np.round(s.ipp / _SAME_POSITION_MM).astype(int))].append(s)
    if len(groups) == len(slices):
        return slices, []
    warnings: list[str] = []
    kept: list[list[_Slice]] = []
    n_identical = 0
    for members in groups.values():
        members.sort(key=lambda s: s.order)
        distinct: list[_Slice] = []
        for s in members:
            if any(np.array_equal(s.pixels, d.pixels, equal_nan=True) for d in distinct):
                n_identical += 1
            else:
                distinct.append(s)
        kept.append(distinct)
    if n_identical:
        warnings.append(f"dropped {n_identical} duplicate image(s) (same position, identical pixels)")
    counts = Counter(len(k) for k in kept)
    if counts.keys() == {1}:
        return [k[0] for k in kept], warnings
    if len(counts) == 1:
        m = next(iter(counts))
        warnings.append(
            f"series holds {m} different images at each of {len(kept)} positions "
            f"(repeated volumes: dynamics or time series); loaded the first volume only"
        )
        return [k[0] for k in kept], warnings
    bad = next(k for k in kept if len(k) > 1)
    raise DicomReadError(
        f"series {label}: {len(bad)} different images at the same position "
        f"{np.round(bad[0].ipp, 3).tolist()} ({', '.join(s.source for s in bad[:4])}) and the repeats "
        "do not form whole volumes; cannot tell which to use"
    )


def _stack_geometry(slices: list[_Slice], label: str, info: SeriesInfo, warnings: list[str]) -> Geometry:
    """Sort ``slices`` in place along the normal and return the grid geometry."""
    iop0 = slices[0].iop
    shape0 = slices[0].pixels.shape
    for s in slices[1:]:
        if np.max(np.abs(s.iop - iop0)) > 1e-3:
            raise GeometryError(
                f"series {label}: orientation differs between {slices[0].source} and {s.source}"
            )
        if s.pixels.shape != shape0:
            raise GeometryError(f"series {label}: matrix differs between {slices[0].source} and {s.source}")
        if max(abs(a - b) for a, b in zip(s.pixel_spacing, slices[0].pixel_spacing, strict=True)) > 1e-3:
            raise GeometryError(
                f"series {label}: PixelSpacing differs between {slices[0].source} and {s.source}"
            )
    row, col = _orthonormal_pair(iop0, label)
    normal = np.cross(row, col)
    slices.sort(key=lambda s: (float(s.ipp @ normal), s.order))
    proj = np.array([float(s.ipp @ normal) for s in slices])
    ps = slices[0].pixel_spacing
    if min(ps) <= 0:
        raise GeometryError(f"series {label}: PixelSpacing {ps} is not positive")
    if len(slices) == 1:
        dz = info.slice_thickness_mm or 1.0
        warnings.append(f"single slice: slice spacing taken from SliceThickness ({dz} mm)")
    else:
        gaps = np.diff(proj)
        median = float(np.median(gaps))
        tol = min(0.1 * median, 0.1)
        worst = int(np.argmax(np.abs(gaps - median)))
        if abs(gaps[worst] - median) > tol:
            raise GeometryError(
                f"series {label}: slice spacing is not uniform: gap of {gaps[worst]:.3f} mm between "
                f"{slices[worst].source} and {slices[worst + 1].source} (median {median:.3f} mm); "
                "missing slice(s) or a non-uniform stack"
            )
        dz = float((proj[-1] - proj[0]) / (len(slices) - 1))
        # every position must lie on the line origin + t * normal (no tilt / shear)
        offsets = np.array([s.ipp for s in slices]) - slices[0].ipp
        in_plane = offsets - np.outer(offsets @ normal, normal)
        drift = np.linalg.norm(in_plane, axis=1)
        limit = 0.02 + 1e-3 * np.abs(offsets @ normal)
        if np.any(drift > limit):
            k = int(np.argmax(drift - limit))
            angle = float(np.degrees(np.arctan2(drift[k], abs(offsets[k] @ normal))))
            raise GeometryError(
                f"series {label}: slice positions do not run along the slice normal "
                f"({slices[k].source} is {drift[k]:.3f} mm off the line, {angle:.2f} deg): "
                "gantry tilt or sheared stack is not supported"
            )
    direction = np.column_stack([row, col, normal])
    return Geometry(
        shape=(shape0[1], shape0[0], len(slices)),
        spacing_mm=(ps[1], ps[0], dz),
        origin_lps_mm=tuple(float(v) for v in slices[0].ipp),  # type: ignore[arg-type]
        direction=direction,
    )


def _orthonormal_pair(iop: NDArray[np.float64], label: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    row = np.asarray(iop[:3], dtype=np.float64)
    col = np.asarray(iop[3:], dtype=np.float64)
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if nr < 0.5 or nc < 0.5 or abs(float(row @ col)) / (nr * nc) > 1e-2:
        raise GeometryError(f"series {label}: ImageOrientationPatient {iop.tolist()} is not orthonormal")
    row = row / nr
    col = col - (col @ row) * row  # remove the rounding noise DS values carry
    return row, col / np.linalg.norm(col)
