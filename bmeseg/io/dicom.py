"""DICOM study loading: index a folder from headers, group into series, assemble volumes.

(Being written: the dataclass below is the contract the rest of bmeseg relies on.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["SeriesInfo", "DicomIndex", "index_dicom", "load_series"]


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
