"""Per-study masks for a batch: a CSV naming, for some studies, a bone mask and/or a drawn reference.

``bmeseg batch ROOT -o OUT --masks masks.csv`` reads a table such as::

    study,bone_mask,reference_mask
    P1_20260101_1a2b3c4d,masks/P1_bones.nii.gz,
    1.2.826.0.1.3680043.8.498.1234,,masks/P2_normal_marrow.nii.gz
    bids/sub-01/ses-1/anat,,refs/sub-01.nii.gz

``study`` names a study the way the researcher knows it: its batch study id
(as in ``cohort.csv``), its StudyInstanceUID, or, for a NIfTI pair, its folder
(relative to ROOT, or absolute). ``bone_mask`` and ``reference_mask`` are the
files ``bmeseg run --bone-mask`` / ``--reference-mask`` take; relative paths are
read from the CSV's folder; an empty cell means none. Studies not in the table
run fully automatically.

Everything is checked before any study runs, and every problem is reported
at once with its line number: an unknown column, a study that matches nothing
(or more than one study), a study named twice, a mask file that does not exist.
A changed or replaced mask file changes the study's input hash, so ``--resume``
redoes that study.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from .discover import StudyTask

__all__ = ["MASK_COLUMNS", "attach_masks"]

#: the columns a mask table may have (``study`` and at least one mask column are required)
MASK_COLUMNS = ("study", "bone_mask", "reference_mask")


def _study_keys(task: StudyTask, root: Path) -> set[str]:
    keys = {task.study_id}
    if task.study_instance_uid:
        keys.add(task.study_instance_uid)
    if task.kind == "nifti":
        folder = Path(task.source).resolve()
        keys.add(str(folder))
        if folder.is_relative_to(root):
            keys.add(folder.relative_to(root).as_posix())
    return keys


def _key(text: str, root: Path) -> str:
    """A table cell as a lookup key: a path-like cell is normalised like the folders it may name."""
    text = text.strip()
    if os.sep in text or "/" in text:
        p = Path(text)
        p = (p if p.is_absolute() else root / p).resolve()
        return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)
    return text


def attach_masks(tasks: Sequence[StudyTask], table: str | os.PathLike[str], root: str | os.PathLike[str]
                 ) -> list[StudyTask]:
    """The tasks with the masks that ``table`` names set; an :class:`~bmeseg.errors.InputError` listing
    every problem of the table otherwise (nothing has run yet)."""
    path = Path(table)
    if not path.is_file():
        raise InputError(f"{path}: mask table not found")
    root_path = Path(root).resolve()
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "") for k, v in r.items()} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: mask table not readable as CSV ({exc})") from exc
    unknown = [h for h in header if h not in MASK_COLUMNS]
    if "study" not in header or unknown or not {"bone_mask", "reference_mask"} & set(header):
        raise InputError(f"{path}: columns must be 'study' and one or both of 'bone_mask', 'reference_mask'; "
                         f"got {', '.join(header) or 'none'}" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    index: dict[str, list[StudyTask]] = {}
    for t in tasks:
        for k in _study_keys(t, root_path):
            index.setdefault(k, []).append(t)
    problems: list[str] = []
    masks: dict[str, dict[str, Path]] = {}
    first_line: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        cell = row.get("study", "").strip()
        if not cell and not any(v.strip() for v in row.values()):
            continue  # a blank line
        hits = index.get(_key(cell, root_path), []) if cell else []
        if not hits:
            problems.append(f"line {line}: study {cell!r} is not a study found under {root_path}"
                            if cell else f"line {line}: no study named")
            continue
        if len(hits) > 1:
            problems.append(f"line {line}: study {cell!r} matches {len(hits)} studies "
                            f"({', '.join(t.study_id for t in hits)}); name it by study id")
            continue
        sid = hits[0].study_id
        if sid in first_line:
            problems.append(f"line {line}: study {sid} is already given masks on line {first_line[sid]}")
            continue
        first_line[sid] = line
        for col in ("bone_mask", "reference_mask"):
            val = row.get(col, "").strip()
            if not val:
                continue
            f = Path(val)
            f = f if f.is_absolute() else path.parent / f
            if not f.is_file():
                problems.append(f"line {line}: {col} {f} (study {sid}) does not exist")
                continue
            masks.setdefault(sid, {})[col] = f
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise InputError(f"{path}: {len(problems)} problem(s) in the mask table; no study was run:\n  "
                         + "\n  ".join(shown))
    return [replace(t, bone_mask=masks[t.study_id].get("bone_mask"),
                    reference_mask=masks[t.study_id].get("reference_mask")) if t.study_id in masks else t
            for t in tasks]
