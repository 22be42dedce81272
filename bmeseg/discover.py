"""What is in a DICOM tree: studies, series, their classification, and the pair ``run`` would use.

:func:`discover` reads headers only (:func:`bmeseg.io.dicom.index_dicom`), classifies
every series (:func:`bmeseg.series.classify_series`) and, per study, asks
:func:`bmeseg.series.choose_pair` which T1 + fluid-sensitive pair ``bmeseg run``
would choose (or why there is none). The result is a plain dict ready for JSON;
:func:`format_discovery` renders it as a table for people.

JSON layout (``schema_version`` 1; every key is always present, unknown values are ``null``)::

    {schema_version, root, n_files, n_series, n_studies, n_skipped, elapsed_s, files_per_s,
     skipped_reasons: {reason kind: count},
     skipped: [{path, reason}],                        # every file that is not a usable image
     studies: [{study_instance_uid, patient_id, study_date, n_series,
                series: [{key, series_instance_uid, series_number, series_description,
                          protocol_name, modality, manufacturer, plane, rows, columns,
                          pixel_spacing_mm: [row, col] | null, slice_thickness_mm, n_slices,
                          n_frames, n_files, repetition_time_ms, echo_time_ms,
                          inversion_time_ms, flip_angle_deg, image_type: [...],
                          is_enhanced, is_mosaic, classification, reason, warnings: [...]}],
                pair: {t1, fluid, t1_label, fluid_label, t1_classification,
                       fluid_classification, notes: [...]} | null,
                pair_error: str | null}]}

``pair.t1`` / ``pair.fluid`` are series ``key`` values (usable as ``run --t1/--stir``).
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter, defaultdict
from typing import Any

from .errors import BmesegError
from .io.dicom import DicomIndex, SeriesInfo, index_dicom
from .series import choose_pair, classify_series

__all__ = ["DISCOVERY_SCHEMA_VERSION", "discover", "discovery_from_index", "format_discovery"]

DISCOVERY_SCHEMA_VERSION = 1


def discover(root: str | os.PathLike[str], *, jobs: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Index ``root`` from headers only and describe its studies and series.

    Parameters
    ----------
    root : path
        Folder (searched recursively) or one file.
    jobs : int, optional
        Header-reading worker processes (see :func:`~bmeseg.io.dicom.index_dicom`).
    progress : bool
        Show a progress bar (tqdm, optional extra ``progress``).

    Returns
    -------
    dict
        JSON-ready description; layout in the module docstring.

    Raises
    ------
    DicomReadError
        ``root`` does not exist.
    """
    t0 = time.perf_counter()
    index = index_dicom(root, jobs=jobs, progress=progress)
    return discovery_from_index(index, elapsed_s=time.perf_counter() - t0)


def _skip_kind(reason: str) -> str:
    """The category of a skip reason, for counting: its text before any ':' or '('."""
    return re.split(r"[:(]", reason, maxsplit=1)[0].strip() or reason


def _series_dict(s: SeriesInfo) -> dict[str, Any]:
    c = classify_series(s)
    return {
        "key": s.key,
        "series_instance_uid": s.series_instance_uid,
        "series_number": s.series_number,
        "series_description": s.series_description,
        "protocol_name": s.protocol_name,
        "modality": s.modality,
        "manufacturer": s.manufacturer,
        "plane": s.plane,
        "rows": s.rows,
        "columns": s.columns,
        "pixel_spacing_mm": list(s.pixel_spacing_mm) if s.pixel_spacing_mm else None,
        "slice_thickness_mm": s.slice_thickness_mm,
        "n_slices": s.n_slices,
        "n_frames": s.n_frames,
        "n_files": len(s.files),
        "repetition_time_ms": s.repetition_time_ms,
        "echo_time_ms": s.echo_time_ms,
        "inversion_time_ms": s.inversion_time_ms,
        "flip_angle_deg": s.flip_angle_deg,
        "image_type": list(s.image_type),
        "is_enhanced": s.is_enhanced,
        "is_mosaic": s.is_mosaic,
        "classification": c.kind.value,
        "reason": c.reason,
        "warnings": list(s.warnings),
    }


def discovery_from_index(index: DicomIndex, *, elapsed_s: float | None = None) -> dict[str, Any]:
    """The :func:`discover` dict for an existing :class:`~bmeseg.io.dicom.DicomIndex`."""
    by_study: dict[str, list[SeriesInfo]] = defaultdict(list)
    for s in index.series:
        by_study[s.study_instance_uid].append(s)
    studies = []
    for uid, series in by_study.items():
        pair: dict[str, Any] | None = None
        pair_error: str | None = None
        try:
            p = choose_pair(series, source=f"study {uid or '(no StudyInstanceUID)'}")
        except BmesegError as exc:
            # the first line says why; the rest is the listing this report already holds
            pair_error = str(exc).split("\n", 1)[0].split(": ", 1)[-1]
        else:
            pair = {
                "t1": p.t1.key,
                "fluid": p.fluid.key,
                "t1_label": p.t1.label,
                "fluid_label": p.fluid.label,
                "t1_classification": p.t1_class.kind.value,
                "fluid_classification": p.fluid_class.kind.value,
                "notes": [n for n in p.notes if not n.startswith("the input holds several studies")],
            }
        first = series[0]
        studies.append({
            "study_instance_uid": uid,
            "patient_id": first.patient_id,
            "study_date": first.study_date,
            "n_series": len(series),
            "series": [_series_dict(s) for s in series],
            "pair": pair,
            "pair_error": pair_error,
        })
    kinds = Counter(_skip_kind(r) for _, r in index.skipped)
    elapsed = None if elapsed_s is None else round(float(elapsed_s), 3)
    return {
        "schema_version": DISCOVERY_SCHEMA_VERSION,
        "root": str(index.root),
        "n_files": index.n_files,
        "n_series": len(index.series),
        "n_studies": len(studies),
        "n_skipped": len(index.skipped),
        "elapsed_s": elapsed,
        "files_per_s": round(index.n_files / elapsed_s, 1) if elapsed_s else None,
        "skipped_reasons": dict(sorted(kinds.items())),
        "skipped": [{"path": str(p), "reason": r} for p, r in index.skipped],
        "studies": studies,
    }


def _num(v: float | None, fmt: str = "{:g}") -> str:
    return "-" if v is None else fmt.format(v)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


_COLUMNS = ("#", "description", "plane", "matrix", "spacing mm", "slices", "TR", "TE", "TI", "class", "reason")


def format_discovery(report: dict[str, Any], *, max_skipped: int = 10) -> str:
    """Human-readable table of a :func:`discover` result (one block per study)."""
    speed = f", {report['files_per_s']:.0f} files/s" if report.get("files_per_s") else ""
    lines = [
        f"{report['root']}: {report['n_files']} file(s), {report['n_series']} series in "
        f"{report['n_studies']} study(ies), {report['n_skipped']} skipped{speed}"
    ]
    for st in report["studies"]:
        lines.append("")
        lines.append(
            f"Study {st['study_instance_uid'] or '(no UID)'}  patient {st['patient_id'] or '-'}  "
            f"date {st['study_date'] or '-'}  ({st['n_series']} series)"
        )
        rows = [_COLUMNS]
        for s in st["series"]:
            ps = s["pixel_spacing_mm"]
            spacing = "-" if ps is None else f"{ps[1]:.3g}x{ps[0]:.3g}x{_num(s['slice_thickness_mm'], '{:.3g}')}"
            label = "?" if s["series_number"] is None else str(s["series_number"])
            if "#" in s["key"]:
                label += "#" + s["key"].split("#", 1)[1]
            rows.append((
                label,
                _clip(s["series_description"] or s["protocol_name"] or "-", 30),
                s["plane"],
                f"{s['columns']}x{s['rows']}",
                spacing,
                str(s["n_slices"]),
                _num(s["repetition_time_ms"], "{:.4g}"),
                _num(s["echo_time_ms"], "{:.3g}"),
                _num(s["inversion_time_ms"], "{:.4g}"),
                s["classification"],
                s["reason"],
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS) - 1)]
        for r in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
        if st["pair"] is not None:
            p = st["pair"]
            lines.append(f"  run would use: T1 {p['t1_label']} + {p['fluid_classification'].upper()} "
                         f"{p['fluid_label']}")
            lines.extend(f"    note: {n}" for n in p["notes"])
        else:
            lines.append(f"  run would stop (exit 3): {st['pair_error']}")
    if report["n_skipped"]:
        lines.append("")
        counts = ", ".join(f"{n} {k}" for k, n in report["skipped_reasons"].items())
        lines.append(f"Skipped {report['n_skipped']} file(s): {counts}")
        notable = [s for s in report["skipped"] if not s["reason"].startswith("not a DICOM")]
        for s in notable[:max_skipped]:
            lines.append(f"  {s['path']}: {s['reason']}")
        if len(notable) > max_skipped:
            lines.append(f"  ... and {len(notable) - max_skipped} more (see --json)")
    return "\n".join(lines)
