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

__all__ = ["SCHEMA_VERSION", "build_report", "software_versions", "write_csv", "write_json"]

#: Bumped when a key is renamed or removed (adding keys keeps the version).
SCHEMA_VERSION = "1.0"


def software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"bmeseg": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "scikit-image", "pydicom", "nibabel", "SimpleITK"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover
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
