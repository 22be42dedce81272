"""DICOM folder -> one NIfTI + JSON sidecar per image series (a small dcm2niix-like converter)."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BmesegError, DicomReadError, OutputExistsError
from .atomic import atomic_path
from .dicom import SeriesInfo, index_dicom, load_series
from .nifti import write_nifti

__all__ = ["ConversionResult", "ConvertedSeries", "convert_dicom", "series_sidecar"]

logger = logging.getLogger(__name__)


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000.0, 9)


def series_sidecar(info: SeriesInfo, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Key acquisition parameters of ``info`` in dcm2niix's BIDS-like JSON vocabulary.

    Times are in **seconds** (as dcm2niix writes them), field strength in tesla.
    Keys whose value is unknown are left out.
    """
    out: dict[str, Any] = {
        "Modality": info.modality,
        "Manufacturer": info.manufacturer,
        "MagneticFieldStrength": info.field_strength_t,
        "SeriesDescription": info.series_description,
        "ProtocolName": info.protocol_name,
        "SequenceName": info.sequence_name,
        "SeriesNumber": info.series_number,
        "ScanningSequence": "_".join(info.scanning_sequence) or None,
        "SequenceVariant": "_".join(info.sequence_variant) or None,
        "ScanOptions": "_".join(info.scan_options) or None,
        "ImageType": list(info.image_type),
        "SliceThickness": info.slice_thickness_mm,
        "EchoNumber": info.echo_number,
        "EchoTime": _seconds(info.echo_time_ms),
        "RepetitionTime": _seconds(info.repetition_time_ms),
        "InversionTime": _seconds(info.inversion_time_ms),
        "FlipAngle": info.flip_angle_deg,
        "ImageOrientationPatientDICOM": list(info.image_orientation) if info.image_orientation else None,
        "StudyInstanceUID": info.study_instance_uid,
        "SeriesInstanceUID": info.series_instance_uid,
        "BmesegSeriesKey": info.key,
        "ConversionSoftware": "bmeseg",
    }
    if meta and meta.get("warnings"):
        out["BmesegWarnings"] = list(meta["warnings"])
    return {k: v for k, v in out.items() if v not in (None, "", [])}


def _sanitise(text: str) -> str:
    """File-name-safe version of a series description (letters, digits, ``-``, ``_``)."""
    s = re.sub(r"[^A-Za-z0-9_-]+", "_", text.strip()).strip("_")
    return s[:64] or "series"


def _base_name(info: SeriesInfo) -> str:
    num = "x" if info.series_number is None else str(info.series_number)
    name = f"{num}_{_sanitise(info.series_description or info.protocol_name)}"
    if "#" in info.key:  # a split series: echo2, ori1, ...
        name += "_" + "_".join(part for part in info.key.split("#")[1:])
    return name


@dataclass(frozen=True)
class ConvertedSeries:
    """One series written by :func:`convert_dicom`."""

    nifti: Path
    sidecar: Path
    series: str  # the series label (number, description, key)
    shape: tuple[int, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConversionResult:
    """What :func:`convert_dicom` wrote and what it skipped, with reasons."""

    written: tuple[ConvertedSeries, ...]
    #: (series label, reason) for every series that could not be assembled
    skipped_series: tuple[tuple[str, str], ...]
    #: (path, reason) for every file the index did not use (non-DICOM, truncated, DICOMDIR...)
    skipped_files: tuple[tuple[Path, str], ...]
    n_files: int

    @property
    def paths(self) -> list[Path]:
        """The NIfTI files written, in series order."""
        return [w.nifti for w in self.written]


def convert_dicom(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    jobs: int | None = None,
    progress: bool = False,
) -> ConversionResult:
    """Convert every image series under ``root`` to ``<out_dir>/<number>_<description>.nii.gz``.

    Each NIfTI gets a JSON sidecar (see :func:`series_sidecar`). Series that
    cannot be assembled (missing slices, sheared stacks, undecodable pixels...)
    are skipped with the reason, logged and listed in the result; the others are
    still written.

    Parameters
    ----------
    root : path
        DICOM folder (searched recursively) or file.
    out_dir : path
        Created if needed.
    overwrite : bool
        Replace existing outputs; otherwise an existing output raises
        :class:`~bmeseg.errors.OutputExistsError` before anything is written.
    jobs : int, optional
        Passed to :func:`~bmeseg.io.dicom.index_dicom`.
    progress : bool
        Progress bar while indexing.

    Returns
    -------
    ConversionResult

    Raises
    ------
    DicomReadError
        ``root`` does not exist, or holds no DICOM image at all.
    """
    index = index_dicom(root, jobs=jobs, progress=progress)
    if not index.series:
        kinds = sorted({r.split(" (")[0] for _, r in index.skipped})
        raise DicomReadError(
            f"{root}: no DICOM image series found ({index.n_files} file(s) looked at"
            + (f"; skipped: {', '.join(kinds)}" if kinds else "") + ")"
        )
    out = Path(out_dir)
    names: dict[str, SeriesInfo] = {}
    for info in index.series:
        base = _base_name(info)
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names[name] = info
    if not overwrite:
        existing = [out / f"{name}.nii.gz" for name in names if (out / f"{name}.nii.gz").exists()]
        if existing:
            raise OutputExistsError(f"{existing[0]} exists (and {len(existing) - 1} more); pass overwrite=True")
    written: list[ConvertedSeries] = []
    skipped: list[tuple[str, str]] = []
    for name, info in names.items():
        try:
            vol = load_series(info)
        except BmesegError as exc:
            logger.warning("not converting series %s: %s", info.label, exc)
            skipped.append((info.label, str(exc)))
            continue
        nii = write_nifti(vol, out / f"{name}.nii.gz")
        side = out / f"{name}.json"
        with atomic_path(side) as tmp:
            tmp.write_text(json.dumps(series_sidecar(info, vol.meta), indent=2) + "\n")
        written.append(ConvertedSeries(nii, side, info.label, tuple(vol.shape),
                                       tuple(str(w) for w in vol.meta.get("warnings", []))))
        logger.info("wrote %s (%s)", nii, info.label)
    return ConversionResult(tuple(written), tuple(skipped), index.skipped, index.n_files)
