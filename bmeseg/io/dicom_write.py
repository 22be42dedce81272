"""Write a :class:`~bmeseg.volume.Volume` as a classic single-frame MR DICOM series.

Used by the synthetic-study generator and by tests that need real DICOM files
with exact geometry. Pixel data are stored as 16-bit integers with a
RescaleSlope/RescaleIntercept chosen to keep the float values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..volume import Volume
from .atomic import atomic_path

__all__ = ["MRAcquisition", "write_dicom_series", "new_uid"]


def new_uid(seed: str | None = None) -> str:
    """A DICOM UID; deterministic when ``seed`` is given (so generated studies are reproducible)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[seed] if seed is not None else None))


@dataclass(frozen=True)
class MRAcquisition:
    """Header facts of an MR series (the cues :mod:`bmeseg.series` classifies on).

    Times in milliseconds, field strength in tesla. ``None`` leaves a tag out.
    """

    series_description: str
    series_number: int
    repetition_time_ms: float | None = None
    echo_time_ms: float | None = None
    inversion_time_ms: float | None = None
    scanning_sequence: str = "SE"
    sequence_variant: str = "SK\\SP"
    scan_options: str = ""
    field_strength_t: float = 1.5
    manufacturer: str = "SIEMENS"
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND")
    protocol_name: str | None = None
    sequence_name: str | None = None
    flip_angle_deg: float = 90.0
    echo_number: int = 1
    body_part: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


def write_dicom_series(
    vol: Volume,
    out_dir: str | os.PathLike[str],
    acq: MRAcquisition,
    *,
    study_uid: str,
    frame_of_reference_uid: str,
    series_uid: str | None = None,
    patient_id: str = "BMESEG-SYNTH",
    patient_name: str = "Synthetic^Phantom",
    study_date: str = "20260101",
    file_names: list[str] | None = None,
    signed: bool = False,
    uid_seed: str | None = None,
) -> list[Path]:
    """Write ``vol`` as one file per slice (``k`` index) into ``out_dir``.

    Parameters
    ----------
    vol : Volume
        ``array[i, j, k]``; ``i`` becomes the DICOM column index, ``j`` the row.
    acq : MRAcquisition
        Sequence parameters and naming.
    study_uid, frame_of_reference_uid : str
        Shared by all series of one study/session.
    file_names : list of str, optional
        One name per slice (lets tests shuffle names); default ``IM_0001.dcm``...
    signed : bool
        Store as signed 16-bit (PixelRepresentation 1).
    uid_seed : str, optional
        Makes the SOPInstanceUIDs deterministic (reproducible generated studies).

    Returns
    -------
    list of Path
        The files written, in slice order.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, MRImageStorage

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = vol.geometry
    nk = g.shape[2]
    names = file_names or [f"IM_{k + 1:04d}.dcm" for k in range(nk)]
    if len(names) != nk:
        raise ValueError(f"need {nk} file names; got {len(names)}")
    series_uid_str: str = series_uid or new_uid()

    data = np.asarray(vol.array, dtype=np.float64)
    lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    int_max = 32767 if signed else 65535
    int_min = -32768 if signed else 0
    intercept = 0.0 if (signed or lo >= 0) else lo
    slope = max((hi - intercept) / int_max, (lo - intercept) / int_min if int_min else 0.0, 1e-6)
    stored = np.clip(np.rint((data - intercept) / slope), int_min, int_max)
    stored = stored.astype(np.int16 if signed else np.uint16)

    row_dir = g.direction[:, 0]
    col_dir = g.direction[:, 1]
    files: list[Path] = []
    for k in range(nk):
        sop_uid = UID(new_uid(None if uid_seed is None else f"{uid_seed}.{series_uid_str}.{k}"))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = out / names[k]
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.Modality = "MR"
        ds.Manufacturer = acq.manufacturer
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.StudyDate = study_date
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid_str
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.SeriesNumber = acq.series_number
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = acq.series_description
        ds.ProtocolName = acq.protocol_name or acq.series_description
        if acq.sequence_name:
            ds.SequenceName = acq.sequence_name
        if acq.body_part:
            ds.BodyPartExamined = acq.body_part
        ds.ImageType = list(acq.image_type)
        ds.ScanningSequence = acq.scanning_sequence
        ds.SequenceVariant = acq.sequence_variant
        if acq.scan_options:
            ds.ScanOptions = acq.scan_options
        ds.MRAcquisitionType = "2D"
        ds.MagneticFieldStrength = acq.field_strength_t
        if acq.repetition_time_ms is not None:
            ds.RepetitionTime = acq.repetition_time_ms
        if acq.echo_time_ms is not None:
            ds.EchoTime = acq.echo_time_ms
        if acq.inversion_time_ms is not None:
            ds.InversionTime = acq.inversion_time_ms
        ds.EchoNumbers = acq.echo_number
        ds.FlipAngle = acq.flip_angle_deg
        ds.SliceThickness = g.spacing_mm[2]
        ds.SpacingBetweenSlices = g.spacing_mm[2]
        ds.ImageOrientationPatient = [float(f"{v:.8f}") for v in (*row_dir, *col_dir)]
        pos = g.index_to_lps([0.0, 0.0, float(k)])
        ds.ImagePositionPatient = [float(f"{v:.6f}") for v in pos]
        ds.SliceLocation = float(f"{float(np.dot(pos, g.slice_normal)):.6f}")
        # PixelSpacing is [row spacing (between rows, along j), column spacing (along i)]
        ds.PixelSpacing = [float(f"{g.spacing_mm[1]:.8f}"), float(f"{g.spacing_mm[0]:.8f}")]
        ds.Rows = g.shape[1]
        ds.Columns = g.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleSlope = float(f"{slope:.10g}")
        ds.RescaleIntercept = float(f"{intercept:.10g}")
        ds.RescaleType = "US"
        for key, value in acq.extra.items():
            setattr(ds, key, value)
        # DICOM rows run along j, so the stored frame is array[:, :, k].T
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        with atomic_path(path) as tmp:
            ds.save_as(str(tmp), enforce_file_format=True)
        files.append(path)
    return files
