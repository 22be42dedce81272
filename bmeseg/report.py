"""The run report: a pure function builds a JSON-ready dict; writers put it on disk atomically."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .io.atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import StudyResult

__all__ = [
    "BONE_COLUMNS",
    "LESION_COLUMNS",
    "SCHEMA_VERSION",
    "bone_rows",
    "build_report",
    "lesion_rows",
    "software_versions",
    "write_csv",
    "write_json",
    "write_tables_and_seg",
]

#: ``lesions.csv``: one row per lesion (ids as in ``bme_mask.nii.gz``), LPS mm
LESION_COLUMNS = [
    "id", "bone", "region", "volume_ml", "n_voxels", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
    "bbox_min_x_mm", "bbox_min_y_mm", "bbox_min_z_mm", "bbox_max_x_mm", "bbox_max_y_mm", "bbox_max_z_mm",
    "slice_first", "slice_last", "depth_mm", "surface_distance_mm", "deep", "intense",
    "mean_stir_ratio", "mean_t1_ratio",
]
#: ``bones.csv``: one row per bone (``region`` = ``all``) and per subregion
BONE_COLUMNS = [
    "bone", "region", "marrow_volume_ml", "bme_volume_ml", "extent_fraction", "grade", "n_lesions", "scored",
    "scheme",
]

#: Bumped when a key is renamed or removed (adding keys keeps the version).
SCHEMA_VERSION = "1.0"


def software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"bmeseg": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "scikit-image", "pydicom", "nibabel", "SimpleITK", "highdicom"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def _clean(x: Any) -> Any:
    """Make values JSON-safe: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, str | bytes):
        try:
            x = x.item()
        except (ValueError, AttributeError):
            return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def build_report(result: StudyResult) -> dict[str, Any]:
    """The ``report.json`` content for one study (a pure function of the result)."""
    m = result.measurements
    g = result.stir.geometry
    report = {
        "schema_version": SCHEMA_VERSION,
        "software": {"name": "bmeseg", "version": __version__, "dependencies": software_versions()},
        "inputs": result.inputs,
        "grid": {
            "shape": list(g.shape),
            "spacing_mm": list(g.spacing_mm),
            "plane": g.plane(),
            "axis_codes_lps": g.axis_codes(),
        },
        "registration": result.registration,
        "marrow_volume_ml": round(m.marrow_volume_ml, 3),
        "bme_volume_ml": round(m.bme_volume_ml, 4),
        "extent_fraction": round(m.extent_fraction, 5),
        "extent_score": m.extent_score,
        "scoring_scheme": m.scoring_scheme,
        "n_lesions": len(m.lesions),
        "lesions": [les.to_dict() for les in m.lesions],
        "bones": [b.to_dict() for b in m.bones],
        "regions": [r.to_dict() for r in m.regions],
        "scores": m.scores,
        "reference": {
            "marrow_levels": result.marrow.levels,
            "edema_thresholds": result.edema.thresholds,
        },
        "parameters": {"pipeline": result.settings.name, **result.settings.to_dict()},
        "timings_s": result.timings_s,
        "warnings": list(result.warnings),
    }
    return dict(_clean(report))


def write_json(data: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    out = Path(path)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(_clean(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return out


def write_csv(rows: list[dict[str, Any]], path: str | os.PathLike[str], *, columns: list[str] | None = None) -> Path:
    """Write a tidy CSV (one row per item), atomically; list values are joined with ';'."""
    cols = columns or (list(dict.fromkeys(k for r in rows for k in r)) if rows else [])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ";".join(map(str, v)) if isinstance(v, list | tuple) else v for k, v in _clean(r).items()})
    out = Path(path)
    with atomic_path(out) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return out


def lesion_rows(result: StudyResult) -> list[dict[str, Any]]:
    """Tidy rows for ``lesions.csv`` (columns :data:`LESION_COLUMNS`)."""
    rows = []
    for les in result.measurements.lesions:
        d = les.to_dict()
        c, (lo, hi) = d["centroid_lps_mm"], d["bbox_lps_mm"]
        rows.append({
            "id": d["id"], "bone": d["bone"], "region": d["region"], "volume_ml": d["volume_ml"],
            "n_voxels": d["n_voxels"], "centroid_x_mm": c[0], "centroid_y_mm": c[1], "centroid_z_mm": c[2],
            "bbox_min_x_mm": lo[0], "bbox_min_y_mm": lo[1], "bbox_min_z_mm": lo[2],
            "bbox_max_x_mm": hi[0], "bbox_max_y_mm": hi[1], "bbox_max_z_mm": hi[2],
            "slice_first": d["slice_range"][0], "slice_last": d["slice_range"][1], "depth_mm": d["depth_mm"],
            "surface_distance_mm": d["surface_distance_mm"], "deep": d["deep"], "intense": d["intense"],
            "mean_stir_ratio": d["mean_stir_ratio"], "mean_t1_ratio": d["mean_t1_ratio"],
        })
    return rows


def bone_rows(result: StudyResult) -> list[dict[str, Any]]:
    """Tidy rows for ``bones.csv``: each bone (``region='all'``) followed by its subregions."""
    m = result.measurements
    rows: list[dict[str, Any]] = []
    for b in m.bones:
        rows.append({**b.to_dict(), "region": "all", "scored": m.scoring_scheme != "moaks", "scheme": m.scoring_scheme})
        rows.extend({**r.to_dict(), "scheme": m.scoring_scheme} for r in m.regions if r.bone == b.bone)
    return rows


def write_tables_and_seg(result: StudyResult, folder: str | os.PathLike[str]) -> list[str]:
    """Write ``lesions.csv``, ``bones.csv`` and (DICOM input) ``bme_seg.dcm`` into ``folder``.

    Returns notes for the report's warnings (SEG skipped and why).
    """
    from .errors import BmesegError, MissingDependencyError

    out = Path(folder)
    write_csv(lesion_rows(result), out / "lesions.csv", columns=LESION_COLUMNS)
    write_csv(bone_rows(result), out / "bones.csv", columns=BONE_COLUMNS)
    m = result.measurements
    files = result.stir.meta.get("files")
    if result.stir.meta.get("source") != "dicom" or not files:
        return ["DICOM SEG not written: the fluid-sensitive input is not a DICOM series"]
    if not m.lesions:
        return ["DICOM SEG not written: no BME found (a SEG needs at least one segment)"]
    try:
        from .io.seg import write_seg

        lesion_bones = {les.id: les.bone for les in m.lesions}
        write_seg(m.lesion_labels, result.marrow.bones, m.bone_names, result.stir.geometry, files,
                  out / "bme_seg.dcm", segments=result.settings.scoring.seg_segments, lesion_bones=lesion_bones)
    except MissingDependencyError as exc:
        return [f"DICOM SEG not written: {exc}"]
    except (BmesegError, OSError, ValueError, AttributeError) as exc:
        return [f"DICOM SEG not written: {type(exc).__name__}: {exc}"]
    return []
