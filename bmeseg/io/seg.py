"""DICOM Segmentation (SEG) of the BME mask, drawn on the fluid-sensitive series.

One segment per bone with BME (``segments="bone"``, coded with the bone's SNOMED CT
anatomic region) or one per lesion (``segments="lesion"``). Segmented property:
category *Morphologically abnormal structure* (SCT 49755003), type *Edema* (SCT
79654002); all codes come from :mod:`pydicom.sr.codedict`.

Geometry: the frames are built from the mask's own :class:`~bmeseg.volume.Geometry`
(a ``highdicom.Volume`` whose affine is the mask's voxel -> LPS affine, axes
reordered to highdicom's ``(slice, row, column)``), so every SEG pixel sits at the
same patient coordinates as the NIfTI mask; highdicom links each frame to the
source image at the same position where there is one.

highdicom is the optional extra ``bmeseg[seg]``; it is imported lazily.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import __version__
from ..errors import InputError, MissingDependencyError
from ..volume import Geometry
from .atomic import atomic_path

__all__ = ["SegmentSpec", "bme_segments", "build_seg", "read_seg_labelmap", "write_seg"]

log = logging.getLogger(__name__)


def _hd() -> Any:
    try:
        import highdicom
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError("highdicom", "seg", "writing a DICOM SEG") from exc
    return highdicom


@dataclass(frozen=True)
class SegmentSpec:
    """One SEG segment: its number (= value in the label map), label and bone."""

    number: int
    label: str
    bone: str | None
    tracking_id: str


def bme_segments(
    lesion_labels: NDArray[np.integer], bones: NDArray[np.integer], bone_names: Mapping[int, str], *,
    segments: str = "bone", lesion_bones: Mapping[int, str] | None = None,
) -> tuple[NDArray[np.uint16], list[SegmentSpec]]:
    """Label map of segment numbers and their descriptions.

    ``segments="bone"``: every BME voxel gets the segment of the bone whose marrow it
    is in (BME outside any bone marrow: one segment ``BME outside marrow``).
    ``segments="lesion"``: one segment per lesion id (``lesion_bones``: id -> bone name).
    """
    if segments not in ("bone", "lesion"):
        raise InputError(f"'segments' must be one of {{'bone', 'lesion'}}; got {segments!r}")
    out = np.zeros(lesion_labels.shape, np.uint16)
    specs: list[SegmentSpec] = []
    bme = lesion_labels > 0
    if segments == "lesion":
        for lid in (int(v) for v in np.unique(lesion_labels) if v > 0):
            bone = (lesion_bones or {}).get(lid)
            n = len(specs) + 1
            specs.append(SegmentSpec(n, f"BME lesion {lid}" + (f" {bone}" if bone else ""), bone, f"lesion-{lid}"))
            out[lesion_labels == lid] = n
        return out, specs
    for b in (int(v) for v in np.unique(bones[bme]) if v > 0):
        name = bone_names.get(b, f"bone_{b}")
        n = len(specs) + 1
        specs.append(SegmentSpec(n, f"BME {name}", name, f"bme-{name}"))
        out[bme & (bones == b)] = n
    outside = bme & (bones <= 0)
    if outside.any():
        n = len(specs) + 1
        specs.append(SegmentSpec(n, "BME outside marrow", None, "bme-outside-marrow"))
        out[outside] = n
    return out, specs


def _anatomy_codes(bone: str | None) -> list[Any]:
    from pydicom.sr.coding import Code

    from ..regions import BONE_CODES

    if not bone:
        return []
    base = bone.split("_")[0]
    if base not in BONE_CODES:
        return []
    value, meaning = BONE_CODES[base]
    return [Code(value, "SCT", meaning)]


def _uid(*parts: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=list(parts)))


def read_source_headers(files: Sequence[str | os.PathLike[str]]) -> list[Any]:
    """Headers (no pixels) of the series' files, for references and patient/study identity."""
    import pydicom

    if not files:
        raise InputError("DICOM SEG: the source series has no files")
    out = [pydicom.dcmread(os.fspath(f), stop_before_pixels=True) for f in files]
    for ds in out:  # type 2 attributes the SEG copies: anonymised/synthetic data may lack them
        for kw in _TYPE2_COPIED:
            if kw not in ds:
                setattr(ds, kw, "")
    return out


#: Patient/study attributes (type 2 in the SEG) highdicom copies from the source images
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "StudyID", "AccessionNumber", "ReferringPhysicianName")


def build_seg(
    labelmap: NDArray[np.integer], geom: Geometry, specs: Sequence[SegmentSpec], source_images: Sequence[Any], *,
    series_number: int | None = None, series_description: str = "BME (bmeseg)",
) -> Any:
    """Build a binary ``highdicom.seg.Segmentation`` from a label map of segment numbers.

    Parameters
    ----------
    labelmap : (I, J, K) int
        Segment number per voxel (0 none) on ``geom`` (the source series' grid).
    geom : Geometry
        Where the voxels are (LPS mm); the SEG frames use exactly this geometry.
    specs : sequence of SegmentSpec
        One per segment number 1..S.
    source_images : sequence of pydicom Dataset
        The series the mask was drawn on (headers suffice).
    """
    hd = _hd()
    from pydicom.sr.codedict import codes

    if labelmap.shape != geom.shape:
        raise InputError(f"SEG label map shape {labelmap.shape} != grid {geom.shape}")
    if not specs or not np.any(labelmap):
        raise InputError("DICOM SEG needs at least one non-empty segment")
    src = source_images[0]
    # highdicom arrays are (slice, row, column) = our (k, j, i)
    arr = np.ascontiguousarray(np.transpose(labelmap, (2, 1, 0))).astype(np.uint16)
    affine = geom.affine[:, [2, 1, 0, 3]]
    vol = hd.Volume(arr, affine, coordinate_system="PATIENT",
                    frame_of_reference_uid=str(getattr(src, "FrameOfReferenceUID", "")) or None)
    algo = hd.AlgorithmIdentificationSequence(
        name="bmeseg", family=codes.cid7162.HistogramAnalysis, version=__version__)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=s.number, segment_label=s.label[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Edema,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
            tracking_id=s.tracking_id, tracking_uid=_uid(str(src.SeriesInstanceUID), s.tracking_id),
            anatomic_regions=_anatomy_codes(s.bone) or None,
        )
        for s in specs
    ]
    digest = hashlib.sha1(arr.tobytes()).hexdigest()
    src_num = getattr(src, "SeriesNumber", None)
    number = series_number if series_number is not None else (int(src_num) + 1000 if src_num is not None else 1000)
    return hd.seg.Segmentation(
        source_images=list(source_images),
        pixel_array=vol,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=_uid("series", str(src.SeriesInstanceUID), digest, __version__),
        series_number=number,
        sop_instance_uid=_uid("sop", str(src.SeriesInstanceUID), digest, __version__),
        instance_number=1,
        manufacturer="bmeseg",
        manufacturer_model_name="bmeseg",
        software_versions=__version__,
        device_serial_number="0",
        series_description=series_description,
        content_label="BME",
        content_description="Bone marrow edema",
    )


def write_seg(
    lesion_labels: NDArray[np.integer], bones: NDArray[np.integer], bone_names: Mapping[int, str], geom: Geometry,
    source_files: Sequence[str | os.PathLike[str]], path: str | os.PathLike[str], *, segments: str = "bone",
    lesion_bones: Mapping[int, str] | None = None,
) -> Path:
    """Build the BME SEG referencing ``source_files`` and write it atomically to ``path``."""
    labelmap, specs = bme_segments(lesion_labels, bones, bone_names, segments=segments, lesion_bones=lesion_bones)
    seg = build_seg(labelmap, geom, specs, read_source_headers(source_files))
    out = Path(path)
    with atomic_path(out, suffix=".dcm") as tmp:
        seg.save_as(tmp)
    return out


def read_seg_labelmap(path: str | os.PathLike[str], geom: Geometry) -> NDArray[np.uint16]:
    """Read a binary SEG back onto ``geom``: segment number per voxel (0 none).

    Each frame is placed by its own PlanePositionSequence / ImageOrientationPatient /
    PixelSpacing, so this checks the SEG's geometry independently of how it was made.
    """
    hd = _hd()
    seg = hd.seg.segread(os.fspath(path))
    out = np.zeros(geom.shape, np.uint16)
    shared = seg.SharedFunctionalGroupsSequence[0]
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    ps = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]  # (row spacing, column spacing)
    rows, cols = int(seg.Rows), int(seg.Columns)
    jj, ii = np.mgrid[0:rows, 0:cols]
    pix = seg.pixel_array if seg.NumberOfFrames > 1 else seg.pixel_array[None]
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ipp = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        sid = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence  # 1 segment: shared
        seg_no = int(sid[0].ReferencedSegmentNumber)
        on = pix[f] > 0
        lps = ipp + ii[on, None] * ps[1] * iop[:3] + jj[on, None] * ps[0] * iop[3:]
        idx = np.rint(geom.lps_to_index(lps)).astype(int)
        ok = np.all((idx >= 0) & (idx < np.asarray(geom.shape)), axis=1)
        out[idx[ok, 0], idx[ok, 1], idx[ok, 2]] = seg_no
    return out
