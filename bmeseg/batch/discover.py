"""Find the studies of a cohort under one folder: DICOM studies by StudyInstanceUID, NIfTI pairs by name.

DICOM: one header-only index of the whole tree (:func:`bmeseg.io.dicom.index_dicom`),
series grouped by StudyInstanceUID wherever their files lie. Each study is
processed from its own series list, so a folder holding several studies, or a
study spread over several folders, is handled the same way.

NIfTI: in each folder, a T1 file (``t1.nii.gz``, ``*_T1w.nii.gz``) is paired
with a fat-suppressed fluid-sensitive file (``stir.nii.gz``, ``*_STIR.nii.gz``,
``*_acq-stir_T2w.nii.gz``, ``*_TIRM``, ``t2fs``/``pdfs`` names). In a BIDS
layout (``sub-*/[ses-*/]anat/``) files pair by their entities (the name minus
``acq-*`` and the suffix).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..io.dicom import SeriesInfo
    from ..pipeline import StudyInput

__all__ = ["Discovery", "StudyTask", "discover_studies", "sanitize_id"]

log = logging.getLogger(__name__)

_NII = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_T1 = re.compile(r"(^|[_\-])t1w?$")
_T1_CONTRAST = re.compile(r"(gd|ce-|post|contrast)")
_FLUID = re.compile(
    r"(^|[_\-])(stir|tirm)([_\-]|$)|acq-(stir|tirm|fs|fatsat)|(^|[_\-])(t2|pd)w?[_\-]?fs([_\-]|$)"
    r"|(^|[_\-])fs[_\-]?(t2|pd)w?([_\-]|$)|fatsat"
)
#: fluid-sensitive preference when a folder offers several
_FLUID_RANK = (re.compile(r"stir"), re.compile(r"tirm"), re.compile(r"t2"), re.compile(r"pd"))


@dataclass(frozen=True)
class StudyTask:
    """One study to process: where its inputs are and what to call it.

    ``files`` lists every input file (used for the resume hash). For DICOM
    studies ``series`` holds the study's indexed series; for NIfTI pairs
    ``t1_path``/``stir_path`` are set.
    """

    study_id: str
    kind: str  # "dicom" | "nifti"
    source: str  # human-readable origin: StudyInstanceUID or folder
    files: tuple[Path, ...]
    study_instance_uid: str = ""
    patient_id: str = ""
    study_date: str = ""
    series: tuple[SeriesInfo, ...] = ()
    t1_path: Path | None = None
    stir_path: Path | None = None
    #: files of this study's folders that could not be read (path: reason), reported as warnings
    notes: tuple[str, ...] = ()
    #: masks given for this study (``bmeseg batch --masks``): ``--bone-mask`` / ``--reference-mask`` of ``run``
    bone_mask: Path | None = None
    reference_mask: Path | None = None

    @property
    def mask_files(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.bone_mask, self.reference_mask) if p is not None)

    def study_input(self) -> StudyInput:
        from ..pipeline import StudyInput

        if self.kind == "dicom":
            return StudyInput(series=self.series, bone_mask=self.bone_mask, reference_mask=self.reference_mask)
        return StudyInput(t1=str(self.t1_path), stir=str(self.stir_path), bone_mask=self.bone_mask,
                          reference_mask=self.reference_mask)


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover_studies` found.

    ``unpaired`` lists NIfTI folders with half a pair, as ``(study_id, folder, reason)``;
    ``skipped`` lists unreadable DICOM-like files (truncated, corrupt) as ``(path, reason)``.
    """

    tasks: tuple[StudyTask, ...]
    unpaired: tuple[tuple[str, str, str], ...] = ()
    skipped: tuple[tuple[Path, str], ...] = ()
    n_files: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)


def sanitize_id(text: str) -> str:
    """A file-name-safe id: letters, digits, ``.``, ``_``, ``-``; other runs become ``-``; never hidden."""
    s = re.sub(r"[^A-Za-z0-9._\-]+", "-", text).strip("-._")
    return s or "study"


def _dicom_id(patient_id: str, study_date: str, study_uid: str) -> str:
    short = hashlib.sha1(study_uid.encode()).hexdigest()[:8]
    return "_".join(sanitize_id(p) for p in (patient_id or "anon", study_date or "nodate", short))


def _under(path: str | os.PathLike[str], dirs: list[Path]) -> bool:
    rp = Path(path).resolve()
    return any(rp.is_relative_to(d) for d in dirs)


def _dicom_tasks(
    root: Path, jobs: int | None, exclude: list[Path], progress: bool,
) -> tuple[list[StudyTask], list[tuple[Path, str]], int]:
    from ..io.dicom import index_dicom

    index = index_dicom(root, jobs=jobs, progress=progress)
    by_study: dict[str, list[SeriesInfo]] = defaultdict(list)
    for s in index.series:
        if exclude and all(_under(f, exclude) for f in s.files):
            continue  # e.g. a DICOM SEG written by an earlier batch into OUT inside ROOT
        by_study[s.study_instance_uid].append(s)
    bad = [(p, why) for p, why in index.skipped
           if not why.startswith("not a DICOM") and not why.startswith("DICOMDIR") and not _under(p, exclude)]
    # an unreadable file is attributed to a study when its folder holds that study only
    folder_studies: dict[Path, set[str]] = defaultdict(set)
    for uid, ss in by_study.items():
        for s in ss:
            for f in s.files:
                folder_studies[Path(f).parent].add(uid)
    notes: dict[str, list[str]] = defaultdict(list)
    for p, why in bad:
        owners = folder_studies.get(Path(p).parent, set())
        if len(owners) == 1:
            notes[next(iter(owners))].append(f"unreadable file {p}: {why}")
    tasks = []
    for uid, ss in by_study.items():
        first = ss[0]
        files = tuple(sorted({Path(f) for s in ss for f in s.files}))
        tasks.append(StudyTask(
            study_id=_dicom_id(first.patient_id, first.study_date, uid), kind="dicom", source=f"StudyInstanceUID {uid}",
            files=files, study_instance_uid=uid, patient_id=first.patient_id, study_date=first.study_date,
            series=tuple(ss), notes=tuple(notes.get(uid, ())),
        ))
    return tasks, bad, index.n_files


def _stem(name: str) -> str:
    return _NII.sub("", name)


def _bids_key(stem: str) -> str:
    """Entities of a BIDS-like name without ``acq-*`` and the suffix: ``sub-01_ses-1``."""
    parts = stem.split("_")
    if len(parts) < 2:
        return ""
    return "_".join(p for p in parts[:-1] if not p.lower().startswith("acq-"))


def _fluid_rank(stem: str) -> int:
    low = stem.lower()
    for i, rx in enumerate(_FLUID_RANK):
        if rx.search(low):
            return i
    return len(_FLUID_RANK)


def _walk_dirs(root: Path, exclude: Iterable[Path]) -> Iterable[tuple[Path, list[str]]]:
    excl = {p.resolve() for p in exclude}
    for d, dirs, files in os.walk(root):
        dp = Path(d)
        dirs[:] = sorted(x for x in dirs if not x.startswith(".") and (dp / x).resolve() not in excl)
        if "report.json" in files:  # a bmeseg output folder
            continue
        yield dp, sorted(files)


def _folder_id(root: Path, folder: Path, key: str) -> str:
    if key:  # BIDS entities name the study
        return sanitize_id(key)
    rel = folder.relative_to(root)
    parts = [p for p in rel.parts if p.lower() != "anat"] or [root.name]
    return sanitize_id("_".join(parts))


def _nifti_tasks(root: Path, exclude: Iterable[Path]) -> tuple[list[StudyTask], list[tuple[str, str, str]]]:
    tasks: list[StudyTask] = []
    unpaired: list[tuple[str, str, str]] = []
    for folder, files in _walk_dirs(root, exclude):
        t1s: dict[str, list[str]] = defaultdict(list)
        fluids: dict[str, list[str]] = defaultdict(list)
        for name in files:
            if not _NII.search(name):
                continue
            stem = _stem(name)
            low = stem.lower()
            key = _bids_key(stem)
            if _T1.search(low) and not _T1_CONTRAST.search(low):
                t1s[key].append(name)
            elif _FLUID.search(low):
                fluids[key].append(name)
        for key in sorted(set(t1s) | set(fluids)):
            sid = _folder_id(root, folder, key)
            if not t1s.get(key) or not fluids.get(key):
                have = t1s.get(key) or fluids.get(key) or []
                what = "T1" if t1s.get(key) else "fluid-sensitive"
                unpaired.append((sid, str(folder), f"only a {what} NIfTI ({', '.join(have)}); no "
                                 + ("fat-suppressed fluid-sensitive" if what == "T1" else "T1") + " file beside it"))
                continue
            t1 = sorted(t1s[key])[0]
            fl = sorted(fluids[key], key=lambda n: (_fluid_rank(_stem(n)), n))[0]
            notes = []
            if len(t1s[key]) > 1 or len(fluids[key]) > 1:
                notes.append(f"several candidates in {folder}; using {t1} and {fl}")
            tasks.append(StudyTask(
                study_id=sid, kind="nifti", source=str(folder), files=(folder / t1, folder / fl),
                t1_path=folder / t1, stir_path=folder / fl, notes=tuple(notes),
            ))
    return tasks, unpaired


def _dedupe(tasks: list[StudyTask]) -> list[StudyTask]:
    """Make ids unique (``-2``, ``-3``... in sorted source order, so stable between runs)."""
    from dataclasses import replace

    seen: dict[str, int] = {}
    out = []
    for t in sorted(tasks, key=lambda t: (t.study_id, t.source)):
        n = seen.get(t.study_id, 0) + 1
        seen[t.study_id] = n
        out.append(t if n == 1 else replace(t, study_id=f"{t.study_id}-{n}"))
    return out


def discover_studies(
    root: str | os.PathLike[str], *, exclude: Iterable[str | os.PathLike[str]] = (), jobs: int | None = None,
    progress: bool = False,
) -> Discovery:
    """Find every DICOM study and NIfTI pair under ``root``.

    Parameters
    ----------
    root : path
        Folder searched recursively.
    exclude : paths
        Folders whose files are not inputs (the batch output folder, when inside ``root``).
    jobs : int, optional
        Processes for DICOM header reading (see :func:`~bmeseg.io.dicom.index_dicom`).
    progress : bool
        Progress bar while indexing headers.

    Returns
    -------
    Discovery
        Tasks sorted by study id; ids are unique and the same on every run over the same tree.
    """
    from ..errors import InputError

    root_path = Path(root)
    if not root_path.is_dir():
        raise InputError(f"{root_path}: not a folder")
    excl = [Path(p).resolve() for p in exclude]
    dicom, skipped, n_files = _dicom_tasks(root_path, jobs, excl, progress)
    nifti, unpaired = _nifti_tasks(root_path, excl)
    tasks = _dedupe(dicom + nifti)
    log.info("found %d studies under %s (%d DICOM, %d NIfTI pairs; %d unpaired NIfTI, %d unreadable files)",
             len(tasks), root_path, len(dicom), len(nifti), len(unpaired), len(skipped))
    return Discovery(tasks=tuple(tasks), unpaired=tuple(unpaired), skipped=tuple(skipped), n_files=n_files)
