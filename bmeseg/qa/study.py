"""Per-study QA pictures on disk: ``qa.png``, ``registration.png`` and ``qa_thumb.png``."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..io.atomic import atomic_path
from ..volume import Volume

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from ..pipeline import StudyResult

__all__ = ["QA_FILES", "study_name", "write_study_qa", "write_study_qa_from_outputs", "write_run_pictures"]

log = logging.getLogger(__name__)

#: Pictures :func:`write_study_qa` writes into a study folder.
QA_FILES = ("qa.png", "registration.png", "qa_thumb.png")


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        # zlib level 1: PNG encoding was a third of the drawing time at the default level, for ~10% smaller files
        fig.savefig(tmp, format="png", facecolor=fig.get_facecolor(), pil_kwargs={"compress_level": 1})
        tmp.chmod(0o644)  # pictures are for sharing (mkstemp makes 0600)
    return path


def _headline(name: str, summary: Mapping[str, Any]) -> str:
    def num(key: str, fmt: str) -> str:
        v = summary.get(key)
        return format(float(v), fmt) if isinstance(v, int | float) else "?"

    return (f"{name}:  BME {num('bme_volume_ml', '.2f')} mL in {summary.get('n_lesions', '?')} lesion(s), "
            f"marrow {num('marrow_volume_ml', '.1f')} mL, extent score {summary.get('extent_score', '?')} "
            f"({summary.get('scoring_scheme', '?')}), registration {summary.get('registration_status', '?')}")


def _write_pictures(
    folder: Path, name: str, stir: Volume, t1: Volume, labels: NDArray[np.integer], bones: NDArray[np.integer],
    lesions: Sequence[Any], registration: Mapping[str, Any], summary: Mapping[str, Any],
) -> list[Path]:
    from .figures import montage, registration_check, thumbnail

    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    out = [
        _save(montage(stir, t1, labels, bones, lesions=lesions, title=_headline(name, summary)), folder / "qa.png"),
        _save(registration_check(stir, t1, registration=registration, lesion_labels=labels, marrow=bones),
              folder / "registration.png"),
        _save(thumbnail(stir, labels, bones), folder / "qa_thumb.png"),
    ]
    log.debug("QA pictures for %s in %.2f s", name, time.perf_counter() - t0)
    return out


def write_study_qa(result: StudyResult, folder: str | os.PathLike[str], *, name: str | None = None) -> list[Path]:
    """Write ``qa.png``, ``registration.png`` and ``qa_thumb.png`` for one processed study.

    Parameters
    ----------
    result : StudyResult
        What :func:`bmeseg.pipeline.run_study` returned.
    folder : path
        Where to write (created if needed).
    name : str, optional
        Study name for the headline; default: the folder's name.

    Returns
    -------
    list of Path
        The files written, in :data:`QA_FILES` order.

    Raises
    ------
    MissingDependencyError
        When matplotlib (extra ``qa``) is not installed.
    """
    folder = Path(folder)
    m = result.measurements
    summary = {
        "bme_volume_ml": m.bme_volume_ml, "n_lesions": len(m.lesions), "marrow_volume_ml": m.marrow_volume_ml,
        "extent_score": m.extent_score, "scoring_scheme": m.scoring_scheme,
        "registration_status": result.registration.get("status"),
    }
    return _write_pictures(folder, name or folder.name, result.stir, result.t1, m.lesion_labels, result.marrow.bones,
                           [les.to_dict() for les in m.lesions], result.registration, summary)


def write_study_qa_from_outputs(study_dir: str | os.PathLike[str], *, name: str | None = None) -> list[Path]:
    """Re-draw the QA pictures of a finished study from its files (NIfTI outputs + ``report.json``).

    Used by ``bmeseg report OUT --pictures`` for studies run without the ``qa`` extra.
    """
    from ..io.nifti import read_nifti

    d = Path(study_dir)
    rep = json.loads((d / "report.json").read_text(encoding="utf-8"))
    stir = read_nifti(d / "stir.nii.gz")
    t1 = read_nifti(d / "t1_registered.nii.gz")
    labels = read_nifti(d / "bme_mask.nii.gz", dtype=np.uint16).array
    bones = read_nifti(d / "marrow_mask.nii.gz", dtype=np.int32).array
    reg = rep.get("registration") or {}
    summary = {**rep, "registration_status": reg.get("status")}
    return _write_pictures(d, name or d.name, stir, t1, labels, bones, rep.get("lesions") or [], reg, summary)


def study_name(out_dir: str | os.PathLike[str]) -> str:
    """The study's name from its output folder, seeing through :func:`bmeseg.io.atomic.atomic_dir`'s
    temporary name (``.<name>.<random>.tmp``, used by ``bmeseg batch`` while a study is being written).

    Examples
    --------
    >>> study_name("/out/.knee_01.x1y2z3.tmp"), study_name("/out/knee_01")
    ('knee_01', 'knee_01')
    """
    name = Path(out_dir).resolve().name
    m = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", name)
    return m.group(1) if m else name


def write_run_pictures(result: StudyResult, tmp_dir: Path, *, name: str) -> list[str]:
    """What ``run`` calls: write the pictures, or log and note why not; never fails the run.

    ``name`` is the output folder's name (the study name is taken from it by :func:`study_name`).
    Returns the names of the files written (empty when matplotlib is missing or drawing failed,
    in which case a line is added to ``result.warnings``).
    """
    try:
        return [p.name for p in write_study_qa(result, tmp_dir, name=study_name(name))]
    except ImportError as exc:
        msg = f"QA pictures not written: {exc}"
    except Exception as exc:  # a drawing bug must not cost the user the whole run
        log.exception("QA pictures failed")
        msg = f"QA pictures not written: {type(exc).__name__}: {exc}"
    log.warning(msg)
    result.warnings.append(msg)
    return []
