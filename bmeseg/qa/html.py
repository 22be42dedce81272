"""Static HTML pages: one per study (``OUT/<study>/index.html``) and one for the cohort (``OUT/index.html``).

The pages are self-contained files (CSS and the sort/filter script are inlined; pictures are the
PNG files beside them, linked relatively), open from disk with no server and make no network
request. They are generated with the standard library only (no template engine needed).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import InputError
from ..io.atomic import atomic_path
from .figures import lesion_colour

__all__ = ["COHORT_COLUMNS", "flag_outliers", "load_cohort", "write_cohort_page", "write_study_page"]

log = logging.getLogger(__name__)

#: Columns of the cohort table: (key, header, kind). ``kind`` 'num' sorts numerically.
COHORT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("study", "study", "text"),
    ("flags", "flags", "text"),
    ("bme_volume_ml", "BME mL", "num"),
    ("n_lesions", "lesions", "num"),
    ("marrow_volume_ml", "marrow mL", "num"),
    ("extent_fraction", "extent %", "num"),
    ("extent_score", "score", "num"),
    ("registration_status", "registration", "text"),
    ("n_warnings", "warnings", "num"),
    ("runtime_s", "runtime s", "num"),
)

_STUDY_KEYS = ("study", "study_id", "study_dir", "folder", "output", "output_dir", "name", "id")


def _css() -> str:
    return resources.files(__package__).joinpath("static/qa.css").read_text(encoding="utf-8")


def _js() -> str:
    return resources.files(__package__).joinpath("static/cohort.js").read_text(encoding="utf-8")


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [dict(r) for r in csv.DictReader(fh)]


def _csv_study(row: Mapping[str, str], known: Iterable[str]) -> str | None:
    names = set(known)
    for key in _STUDY_KEYS:
        v = (row.get(key) or "").strip()
        if v and (v in names or Path(v).name in names):
            return v if v in names else Path(v).name
    for key in _STUDY_KEYS:
        v = (row.get(key) or "").strip()
        if v:
            return Path(v).name
    return None


def _row_from_report(name: str, rep: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    reg = rep.get("registration") or {}
    warnings = [str(w) for w in rep.get("warnings") or []]
    timings = rep.get("timings_s") or {}
    frac = _num(rep.get("extent_fraction"))
    return {
        "study": name,
        "status": "done",
        "href": f"{name}/index.html",
        "thumb": f"{name}/qa_thumb.png" if (folder / "qa_thumb.png").is_file() else None,
        "bme_volume_ml": _num(rep.get("bme_volume_ml")),
        "n_lesions": rep.get("n_lesions", len(rep.get("lesions") or [])),
        "marrow_volume_ml": _num(rep.get("marrow_volume_ml")),
        "extent_fraction": None if frac is None else round(100.0 * frac, 2),
        "extent_score": rep.get("extent_score"),
        "scoring_scheme": rep.get("scoring_scheme"),
        "registration_status": str(reg.get("status", "")),
        "registration_reasons": [str(r) for r in reg.get("reasons") or []],
        "n_warnings": len(warnings),
        "warnings": warnings,
        "runtime_s": _num(timings.get("total")),
        "pipeline": (rep.get("parameters") or {}).get("pipeline"),
        "error": None,
    }


def flag_outliers(
    rows: list[dict[str, Any]],
    *,
    large_bme_ml: float | None = None,
    large_extent_percent: float = 50.0,
    low_marrow_fraction: float = 0.5,
    low_marrow_ml: float = 1.0,
) -> list[dict[str, Any]]:
    """Add ``flags`` (list of ``(severity, text)``) and ``severity`` (0-2) to each row, in place.

    Flags: run failed (2); registration failed (2) or suspicious (1); zero BME (1); very large
    BME (1: above ``large_bme_ml`` when given, else above Q3 + 3 IQR of the cohort when it has at
    least 5 studies, or more than ``large_extent_percent`` % of the marrow); low marrow (2 below
    ``low_marrow_ml``, 1 below ``low_marrow_fraction`` x the cohort median); warnings (1).
    Returns ``rows``.
    """
    done = [r for r in rows if r.get("status") == "done"]
    bme = sorted(v for v in (_num(r.get("bme_volume_ml")) for r in done) if v is not None)
    marrow = [v for v in (_num(r.get("marrow_volume_ml")) for r in done) if v is not None]
    big = large_bme_ml
    if big is None and len(bme) >= 5:
        q1, _, q3 = statistics.quantiles(bme, n=4, method="inclusive")
        big = max(q3 + 3.0 * (q3 - q1), 1.0)
    med_marrow = statistics.median(marrow) if len(marrow) >= 3 else None
    for r in rows:
        flags: list[tuple[int, str]] = []
        if r.get("status") != "done":
            flags.append((2, f"run {r.get('status') or 'failed'}"))
        reg = r.get("registration_status")
        if reg == "failed":
            flags.append((2, "registration failed"))
        elif reg == "suspicious":
            flags.append((1, "registration suspicious"))
        v = _num(r.get("bme_volume_ml"))
        if r.get("status") == "done" and v == 0.0:
            flags.append((1, "zero BME"))
        frac = _num(r.get("extent_fraction"))
        if v is not None and ((big is not None and v > big) or (frac is not None and frac > large_extent_percent)):
            flags.append((1, "very large BME"))
        m = _num(r.get("marrow_volume_ml"))
        if m is not None and m < low_marrow_ml:
            flags.append((2, "low marrow volume"))
        elif m is not None and med_marrow is not None and m < low_marrow_fraction * med_marrow:
            flags.append((1, "low marrow volume"))
        if r.get("n_warnings"):
            flags.append((1, f"{r['n_warnings']} warning(s)"))
        r["flags"] = flags
        r["severity"] = max((s for s, _ in flags), default=0)
    return rows


def load_cohort(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The cohort under ``out_dir`` as one dict per study, with outlier flags.

    Reads every ``out_dir/<study>/report.json``; adds the columns of ``out_dir/cohort.csv``
    (written by ``bmeseg batch``) to the matching study (prefixed ``csv_``) and rows for studies
    listed there or in ``failures.csv`` that have no report. Rows are sorted by study name.

    Each row has: ``study``, ``status`` (``done`` or why not), ``href``, ``thumb``,
    ``bme_volume_ml``, ``n_lesions``, ``marrow_volume_ml``, ``extent_fraction`` (percent),
    ``extent_score``, ``scoring_scheme``, ``registration_status``, ``n_warnings``, ``warnings``,
    ``runtime_s``, ``error``, ``flags`` and ``severity`` (see :func:`flag_outliers`).
    """
    root = Path(out_dir)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    rows: dict[str, dict[str, Any]] = {}
    for rep_path in sorted(root.glob("*/report.json")):
        name = rep_path.parent.name
        try:
            rep = json.loads(rep_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable report (%s)", rep_path, exc)
            rows[name] = {"study": name, "status": "unreadable report", "error": str(exc)}
            continue
        rows[name] = _row_from_report(name, rep, rep_path.parent)
    sources: tuple[tuple[str, str | None], ...] = (("cohort.csv", None), ("failures.csv", "failed"))
    for fname, status in sources:
        path = root / fname
        if not path.is_file():
            continue
        for rec in _read_csv(path):
            key = _csv_study(rec, rows)
            if key is None:
                continue
            row = rows.get(key)
            if row is None:
                row = rows[key] = {"study": key, "status": status or (rec.get("status") or "no report"),
                                   "href": None, "thumb": None}
            if row.get("status") != "done":  # why it has no report: batch's failure columns
                parts = [rec.get(c) for c in ("stage", "failure_stage", "error_type", "error", "message")]
                err = ": ".join(x for x in parts if x)
                if err:
                    row["error"] = err
                if status == "failed":
                    row["status"] = "failed"
            else:
                for k, v in rec.items():
                    if k is not None and k not in _STUDY_KEYS:
                        row.setdefault(f"csv_{k}", v)
    out = [rows[k] for k in sorted(rows)]
    for r in out:
        for key, _, _ in COHORT_COLUMNS:
            r.setdefault(key, None)
        r.setdefault("warnings", [])
        r.setdefault("error", None)
    return flag_outliers(out)


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None or x == "":
        return ""
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _page(title: str, body: str, *, script: str = "") -> str:
    js = f"<script>\n{script}\n</script>\n" if script else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<link rel=\"icon\" href=\"data:,\">\n"
        f"<title>{escape(title)}</title>\n<style>\n{_css()}\n</style>\n</head>\n<body>\n{body}\n{js}</body>\n</html>\n"
    )


def _write(path: Path, text: str) -> Path:
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
    return path


def _flags_html(flags: Sequence[tuple[int, str]], title: str = "") -> str:
    t = f' title="{escape(title)}"' if title else ""
    return "".join(f'<span class="flag sev-{s}"{t}>{escape(f)}</span>' for s, f in flags)


def _status_html(status: str | None) -> str:
    s = status or ""
    return f'<span class="status-{escape(s)}">{escape(s)}</span>' if s else ""


def _kv_table(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(_fmt(v, 3))}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def write_study_page(study_dir: str | os.PathLike[str], *, row: Mapping[str, Any] | None = None,
                     cohort_href: str | None = "../index.html") -> Path:
    """Write ``study_dir/index.html``: headline numbers, flags, the QA pictures and the report.

    ``row`` is the study's cohort row (from :func:`load_cohort`) to show its flags; without it
    the study is flagged on its own. ``cohort_href`` links back to the cohort page (None: no link).
    """
    d = Path(study_dir)
    rep = json.loads((d / "report.json").read_text(encoding="utf-8"))
    r = dict(row) if row is not None else flag_outliers([_row_from_report(d.name, rep, d)])[0]
    reg = rep.get("registration") or {}
    parts = []
    if cohort_href:
        parts.append(f'<p><a href="{escape(cohort_href)}">&larr; cohort</a></p>')
    parts.append(f"<h1>{escape(d.name)}</h1>")
    parts.append(f'<div>{_flags_html(r.get("flags") or []) or "<span class=muted>no flags</span>"}</div>')
    cards = [
        ("BME", f"{_fmt(_num(rep.get('bme_volume_ml')))} mL"),
        ("lesions", _fmt(rep.get("n_lesions"))),
        ("marrow", f"{_fmt(_num(rep.get('marrow_volume_ml')), 1)} mL"),
        (f"extent score ({rep.get('scoring_scheme', '')})", _fmt(rep.get("extent_score"))),
        ("registration", _status_html(str(reg.get("status", "")))),
        ("runtime", f"{_fmt(_num((rep.get('timings_s') or {}).get('total')), 1)} s"),
    ]
    parts.append('<div class="cards">' + "".join(
        f'<div class="card"><div class="muted">{escape(k)}</div><div class="v">{v if k == "registration" else escape(v)}'
        "</div></div>" for k, v in cards) + "</div>")
    warnings = [str(w) for w in rep.get("warnings") or []]
    if warnings:
        parts.append("<h2>Warnings</h2><ul class=\"warnings\">" + "".join(
            f"<li>{escape(w)}</li>" for w in warnings) + "</ul>")
    parts.append('<h2>Pictures</h2><div class="pictures">')
    pics = [("qa.png", "slices with BME (and some without): STIR and registered T1, outlines and lesion ids"),
            ("registration.png", "registration check: T1 edges over STIR, and a checkerboard")]
    found = False
    for fname, alt in pics:
        if (d / fname).is_file():
            found = True
            parts.append(f'<p class="muted">{escape(alt)}</p><a href="{fname}"><img src="{fname}" alt="{escape(alt)}"></a>')
    if not found:
        parts.append('<p class="muted">No pictures (install the "qa" extra, then run '
                     "<code>bmeseg report OUT --pictures</code>).</p>")
    parts.append("</div>")
    lesions = rep.get("lesions") or []
    parts.append(f"<h2>Lesions ({len(lesions)})</h2>")
    if lesions:
        head = ("id", "bone", "region", "volume mL", "centroid LPS mm", "slices", "STIR ratio", "T1 ratio", "intense")
        body = []
        for les in lesions:
            lid = int(les.get("id", 0))
            sl = les.get("slice_range") or []
            body.append(
                "<tr>"
                f'<td><span class="swatch" style="background:{lesion_colour(lid)}"></span>{lid}</td>'
                f"<td>{escape(str(les.get('bone', '')))}</td><td>{escape(str(les.get('region', '')))}</td>"
                f"<td class=num>{_fmt(_num(les.get('volume_ml')), 3)}</td>"
                f"<td>{escape(', '.join(_fmt(_num(c), 1) for c in les.get('centroid_lps_mm') or []))}</td>"
                f"<td>{escape('-'.join(str(int(s) + 1) for s in sl))}</td>"
                f"<td class=num>{_fmt(_num(les.get('mean_stir_ratio')))}</td>"
                f"<td class=num>{_fmt(_num(les.get('mean_t1_ratio')))}</td>"
                f"<td>{'yes' if les.get('intense') else ''}</td></tr>")
        parts.append("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
                     + "".join(body) + "</tbody></table>")
        parts.append('<p class="muted">Slices are numbered from 1 as in the pictures.</p>')
    bones = rep.get("bones") or []
    if bones:
        parts.append("<h2>Bones</h2>")
        keys = [k for k in ("bone", "marrow_volume_ml", "bme_volume_ml", "extent_fraction", "grade", "n_lesions")
                if any(k in b for b in bones)]
        parts.append("<table><thead><tr>" + "".join(f"<th>{escape(k)}</th>" for k in keys) + "</tr></thead><tbody>"
                     + "".join("<tr>" + "".join(f"<td>{escape(_fmt(b.get(k), 3))}</td>" for k in keys) + "</tr>"
                               for b in bones) + "</tbody></table>")
    parts.append("<h2>Registration</h2>")
    parts.append(_kv_table((k, reg.get(k)) for k in ("status", "rotation_angle_deg", "translation_norm_mm",
                                                     "nmi_before", "nmi_after", "metric_before", "metric_after")
                           if k in reg))
    reasons = reg.get("reasons") or []
    if reasons:
        parts.append("<ul>" + "".join(f"<li>{escape(str(x))}</li>" for x in reasons) + "</ul>")
    inputs = rep.get("inputs") or {}
    if inputs:
        parts.append("<h2>Inputs</h2>")
        parts.append(_kv_table((f"{role}: {k}", v) for role, meta in inputs.items()
                               for k, v in (meta or {}).items() if v is not None))
    parts.append("<h2>Timings (s)</h2>")
    parts.append(_kv_table((k, v) for k, v in (rep.get("timings_s") or {}).items()))
    files = [f for f in sorted(os.listdir(d)) if f.endswith((".nii.gz", ".json", ".csv", ".dcm", ".png"))]
    parts.append("<h2>Files</h2><ul>" + "".join(f'<li><a href="{escape(f)}">{escape(f)}</a></li>' for f in files)
                 + "</ul>")
    sw = rep.get("software") or {}
    parts.append(f'<p class="muted">bmeseg {escape(str(sw.get("version", "")))}, report schema '
                 f'{escape(str(rep.get("schema_version", "")))}.</p>')
    return _write(d / "index.html", _page(f"bmeseg QA: {d.name}", "\n".join(parts)))


def write_cohort_page(out_dir: str | os.PathLike[str], *, study_pages: bool = True,
                      pictures: bool = False) -> Path:
    """Write ``out_dir/index.html``: the sortable, filterable table of every study, outliers highlighted.

    This is what ``bmeseg report OUT`` runs and what ``bmeseg batch`` calls when it finishes.

    Parameters
    ----------
    out_dir : path
        A batch output folder: ``out_dir/<study>/report.json`` per study, optionally
        ``cohort.csv`` and ``failures.csv``.
    study_pages : bool
        Also (re)write each study's ``index.html`` (linked from the table).
    pictures : bool
        Draw the QA pictures of studies that have none (needs the ``qa`` extra).

    Returns
    -------
    Path
        ``out_dir/index.html``.
    """
    root = Path(out_dir)
    rows = load_cohort(root)
    if pictures:
        from .study import write_study_qa_from_outputs

        for r in rows:
            sd = root / r["study"]
            if r["status"] == "done" and not (sd / "qa.png").is_file():
                write_study_qa_from_outputs(sd)
        rows = load_cohort(root)
    if study_pages:
        for r in rows:
            if r["status"] == "done":
                write_study_page(root / r["study"], row=r)
    return _write(root / "index.html", _page(f"bmeseg cohort: {root.name}", _cohort_body(root, rows),
                                             script=_js()))


def _cohort_body(root: Path, rows: list[dict[str, Any]]) -> str:
    done = [r for r in rows if r["status"] == "done"]
    bme = [v for v in (_num(r["bme_volume_ml"]) for r in done) if v is not None]
    runtime = [v for v in (_num(r["runtime_s"]) for r in done) if v is not None]
    n_flagged = sum(1 for r in rows if r["flags"])
    cards = [
        ("studies", str(len(rows))),
        ("processed", str(len(done))),
        ("flagged", str(n_flagged)),
        ("not processed", str(len(rows) - len(done))),
        ("median BME", f"{statistics.median(bme):.2f} mL" if bme else "-"),
        ("median runtime", f"{statistics.median(runtime):.1f} s" if runtime else "-"),
    ]
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [f"<h1>bmeseg cohort: {escape(root.name)}</h1>",
             f'<p class="muted">{len(rows)} studies; page written {escape(when)} by bmeseg {escape(__version__)}.'
             " Click a column header to sort, a thumbnail or name to open the study.</p>",
             '<div class="cards">' + "".join(
                 f'<div class="card"><div class="muted">{escape(k)}</div><div class="v">{escape(v)}</div></div>'
                 for k, v in cards) + "</div>"]
    links = [f'<a href="{f}">{f}</a>' for f in ("cohort.csv", "failures.csv", "provenance.json")
             if (root / f).is_file()]
    if links:
        parts.append(f"<p>Files: {' | '.join(links)}</p>")
    statuses = sorted({str(r["registration_status"]) for r in rows if r["registration_status"]})
    options = '<option value="">any</option>' + "".join(
        f'<option value="{escape(s)}">{escape(s)}</option>' for s in statuses)
    parts.append(
        '<div class="controls">'
        '<label>filter <input type="search" id="filter-text" placeholder="study, bone, warning..."></label>'
        '<label><input type="checkbox" id="filter-flagged"> flagged only</label>'
        f'<label>registration <select id="filter-registration">{options}</select></label>'
        f'<span class="muted">showing <b id="shown-count">{len(rows)}</b> of {len(rows)}</span></div>')
    head = "<th>picture</th>" + "".join(
        f'<th data-type="{kind}" class="{"num" if kind == "num" else ""}">{escape(label)}</th>'
        for _, label, kind in COHORT_COLUMNS)
    body = []
    for r in rows:
        cells = []
        href = r.get("href")
        if r.get("thumb"):
            img = f'<img class="thumb" src="{escape(r["thumb"])}" alt="{escape(r["study"])}" loading="lazy">'
            cells.append(f'<td><a href="{escape(href)}">{img}</a></td>' if href else f"<td>{img}</td>")
        else:
            cells.append('<td class="muted">-</td>')
        for key, _, kind in COHORT_COLUMNS:
            v = r.get(key)
            if key == "study":
                name = escape(str(v))
                txt = f'<a href="{escape(href)}">{name}</a>' if href else name
                if r.get("error"):
                    txt += f'<div class="muted">{escape(str(r["error"]))[:300]}</div>'
                cells.append(f'<td data-v="{name}">{txt}</td>')
            elif key == "flags":
                tip = "\n".join(list(r.get("warnings") or []) + list(r.get("registration_reasons") or []))
                cells.append(f'<td data-v="{r["severity"]}">{_flags_html(r["flags"], tip)}</td>')
            elif key == "registration_status":
                cells.append(f'<td>{_status_html(v)}</td>')
            elif kind == "num":
                x = _num(v)
                shown = _fmt(x, 1 if key in ("marrow_volume_ml", "runtime_s", "extent_fraction") else 2)
                if key in ("n_lesions", "extent_score", "n_warnings") and x is not None:
                    shown = str(int(x))
                cells.append(f'<td class="num" data-v="{"" if x is None else x}">{shown}</td>')
            else:
                cells.append(f"<td>{escape(_fmt(v))}</td>")
        body.append(f'<tr class="sev-{r["severity"]}" data-study="{escape(str(r["study"]))}" data-severity="{r["severity"]}" '
                    f'data-flagged="{len(r["flags"])}" data-registration="{escape(str(r["registration_status"] or ""))}">'
                    + "".join(cells) + "</tr>")
    parts.append(f'<table id="studies"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(body)
                 + "\n</tbody></table>")
    parts.append('<p class="muted">Flags: red = run or registration failed, or almost no marrow found; '
                 "yellow = registration suspicious, zero or very large BME (above Q3 + 3 IQR of this cohort, "
                 "or over half the marrow), low marrow volume (under half the cohort median), warnings.</p>")
    return "\n".join(parts)
