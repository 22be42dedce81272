"""One study, end to end: headers -> pair -> volumes -> registration -> marrow -> edema -> measures -> outputs.

:func:`run_study` is what ``bmeseg run`` calls; the CLI only parses arguments.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import PipelineSettings, load_settings
from .edema import EdemaResult, detect_edema
from .errors import InputError, OutputExistsError
from .marrow import MarrowResult, absorb_lesions, find_marrow
from .measure import Measurements, measure
from .volume import Volume

if TYPE_CHECKING:  # pragma: no cover
    from numpy.typing import NDArray

    from .io.dicom import SeriesInfo

__all__ = ["OUTPUT_FILES", "StudyInput", "StudyResult", "detect", "load_pair", "output_paths", "run_study"]

log = logging.getLogger(__name__)

#: Files ``run`` writes into the output folder (``report.json`` last: it marks completion).
OUTPUT_FILES = (
    "bme_mask.nii.gz",
    "marrow_mask.nii.gz",
    "stir.nii.gz",
    "t1_registered.nii.gz",
    "qa.png",  # QA pictures (issue F): skipped when the 'qa' extra (matplotlib) is missing
    "registration.png",
    "qa_thumb.png",
    "lesions.csv",  # report tables (issue D)
    "bones.csv",
    "bme_seg.dcm",  # DICOM input with the 'seg' extra (highdicom) only
    "report.json",
)


LAYOUTS = ("flat", "bids")

#: BIDS-derivatives names: ``<source entities>_<what>`` (desc/space entities and suffixes)
_BIDS_NAMES = {
    "bme_mask.nii.gz": "desc-bme_dseg.nii.gz",
    "marrow_mask.nii.gz": "desc-marrow_dseg.nii.gz",
    "stir.nii.gz": "desc-reference_STIR.nii.gz",
    "t1_registered.nii.gz": "space-STIR_desc-registered_T1w.nii.gz",
    "qa.png": "desc-qa_overview.png",
    "registration.png": "desc-registration_overview.png",
    "qa_thumb.png": "desc-qathumb_overview.png",
    "lesions.csv": "desc-lesions_table.csv",
    "bones.csv": "desc-bones_table.csv",
    "bme_seg.dcm": "desc-bme_seg.dcm",
    "report.json": "desc-bmeseg_report.json",
}
_BIDS_ENTITY = re.compile(r"^(sub-[A-Za-z0-9]+)(?:_(ses-[A-Za-z0-9]+))?")


def output_paths(out_dir: str | os.PathLike[str], inp: StudyInput, layout: str = "flat") -> dict[str, Path]:
    """Where each of :data:`OUTPUT_FILES` goes for ``layout``.

    ``"flat"``: ``OUT_DIR/<name>`` (the output contract). ``"bids"`` (NIfTI inputs from a BIDS
    dataset): OUT_DIR is a BIDS-derivatives dataset and files go to
    ``OUT_DIR/sub-<label>[/ses-<label>]/anat/sub-<label>[_ses-<label>]_<desc/suffix>``, the
    subject and session taken from the fluid-sensitive file's name.

    >>> p = output_paths("d", StudyInput(t1="sub-01_ses-2_T1w.nii.gz", stir="x/sub-01_ses-2_STIR.nii.gz"), "bids")
    >>> p["bme_mask.nii.gz"].as_posix()
    'd/sub-01/ses-2/anat/sub-01_ses-2_desc-bme_dseg.nii.gz'
    """
    if layout not in LAYOUTS:
        raise InputError(f"'layout' must be one of {set(LAYOUTS)}; got {layout!r}")
    out = Path(out_dir)
    if layout == "flat":
        return {name: out / name for name in OUTPUT_FILES}
    source = inp.stir if inp.dicom_dir is None else None
    m = _BIDS_ENTITY.match(Path(source).name) if source else None
    if m is None:
        raise InputError(
            "--layout bids needs BIDS-named NIfTI inputs (sub-<label>[_ses-<label>]_..._<suffix>.nii.gz); "
            f"got {source or inp.dicom_dir}"
        )
    sub, ses = m.group(1), m.group(2)
    folder = out / sub / ses / "anat" if ses else out / sub / "anat"
    prefix = f"{sub}_{ses}" if ses else sub
    return {name: folder / f"{prefix}_{_BIDS_NAMES[name]}" for name in OUTPUT_FILES}


def _write_dataset_description(out_dir: Path) -> None:
    """The BIDS-derivatives ``dataset_description.json`` (written once, never overwritten)."""
    from . import __version__
    from .report import write_json

    path = out_dir / "dataset_description.json"
    if not path.exists():
        write_json({"Name": "bmeseg bone marrow edema segmentation", "BIDSVersion": "1.9.0",
                    "DatasetType": "derivative",
                    "GeneratedBy": [{"Name": "bmeseg", "Version": __version__}]}, path)


# below this share of the body on the fluid-sensitive image reached by the T1, the run says so: a T1 in
# another plane or a shorter slab leaves part of the field unassessed (a coronal knee T1 may miss the patella)
T1_COVERAGE_NOTE = 0.9


@dataclass(frozen=True)
class StudyInput:
    """What to process: a DICOM folder (with optional series selectors) or a NIfTI pair.

    ``t1`` / ``stir`` are series selectors (number, UID, description) when
    ``dicom_dir`` is given, and NIfTI file paths otherwise. ``series`` (the
    already indexed series of one study, e.g. from a cohort-wide
    :func:`~bmeseg.io.dicom.index_dicom`) replaces indexing ``dicom_dir``.
    """

    dicom_dir: Path | None = None
    t1: str | None = None
    stir: str | None = None
    bone_mask: Path | None = None
    series: tuple[SeriesInfo, ...] | None = None
    reference_mask: Path | None = None

    def __post_init__(self) -> None:
        if self.dicom_dir is None and self.series is None and (self.t1 is None or self.stir is None):
            raise InputError("give a DICOM folder, or both --t1 and --stir NIfTI files")

    @property
    def is_dicom(self) -> bool:
        return self.dicom_dir is not None or self.series is not None


@dataclass
class StudyResult:
    """Everything a run produced, in memory (the files are written from this)."""

    t1: Volume  # resampled onto the fluid-sensitive grid
    stir: Volume
    marrow: MarrowResult
    edema: EdemaResult
    measurements: Measurements
    registration: dict[str, Any]
    inputs: dict[str, Any]
    settings: PipelineSettings
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        if not hasattr(exc, "bmeseg_stage"):  # innermost stage wins; read by bmeseg.batch
            exc.bmeseg_stage = stage  # type: ignore[attr-defined]
        raise
    finally:
        timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - t0, 4)


def _series_meta(vol: Volume) -> dict[str, Any]:
    m = vol.meta
    if "path" in m and "series_instance_uid" not in m:
        return {"path": m["path"]}
    return {
        "series_instance_uid": m.get("series_instance_uid"),
        "series_number": m.get("series_number"),
        "series_description": m.get("series_description"),
        "classification": m.get("classification"),
        "classification_reason": m.get("classification_reason"),
    }


def load_pair(inp: StudyInput, timings: dict[str, float] | None = None) -> tuple[Volume, Volume, list[str]]:
    """Load the T1 and fluid-sensitive volumes (native grids) and any notes about the choice."""
    timings = {} if timings is None else timings
    notes: list[str] = []
    if inp.dicom_dir is None and inp.series is None:
        from .io.nifti import read_nifti

        assert inp.t1 is not None and inp.stir is not None
        with _timed(timings, "load"):
            t1 = read_nifti(inp.t1)
            stir = read_nifti(inp.stir)
        return t1, stir, notes

    from .io.dicom import index_dicom, load_series
    from .series import choose_pair

    if inp.series is not None:
        series = inp.series
        source = str(inp.dicom_dir) if inp.dicom_dir is not None else (
            f"study {series[0].study_instance_uid}" if series else "study")
    else:
        assert inp.dicom_dir is not None
        root = Path(inp.dicom_dir)
        if not root.is_dir():
            raise InputError(f"{root}: not a folder")
        with _timed(timings, "index"):
            index = index_dicom(root)
        for path, why in index.skipped:
            if "not a DICOM" not in why:
                notes.append(f"skipped {path}: {why}")
        series, source = index.series, str(root)
    with _timed(timings, "select"):
        pair = choose_pair(series, t1=inp.t1, fluid=inp.stir, source=source)
    notes.extend(pair.notes)
    with _timed(timings, "load"):
        t1 = load_series(pair.t1).replace_meta(
            classification=pair.t1_class.kind.value, classification_reason=pair.t1_class.reason
        )
        stir = load_series(pair.fluid).replace_meta(
            classification=pair.fluid_class.kind.value, classification_reason=pair.fluid_class.reason,
            files=[str(p) for p in pair.fluid.files],  # source images the DICOM SEG references
        )
    for v in (t1, stir):
        notes.extend(str(w) for w in v.meta.get("warnings", []))
    return t1, stir, notes


def _register(t1: Volume, stir: Volume, settings: PipelineSettings, notes: list[str]) -> tuple[Volume, dict[str, Any]]:
    from . import register as reg

    cfg = settings.registration
    if not cfg.enabled:
        out = reg.resample_to(t1, stir.geometry, None)
        return out, {"status": "skipped", "rotation_deg": [0.0, 0.0, 0.0], "translation_mm": [0.0, 0.0, 0.0],
                     "metric_before": None, "metric_after": None, "reasons": ["disabled by settings"]}
    result = reg.register_rigid(stir, t1, settings=cfg)
    info = result.to_dict()
    if result.status == "failed":
        notes.append("registration failed its checks (" + "; ".join(result.reasons)
                     + "); T1 placed by scanner geometry only")
        return reg.resample_to(t1, stir.geometry, None), info
    if result.status == "suspicious":
        notes.append("registration is suspicious: " + "; ".join(result.reasons))
    return reg.resample_to(t1, stir.geometry, result), info


def detect(
    t1_on_stir: Volume, stir: Volume, settings: PipelineSettings, *, bone_mask: Volume | None = None,
    timings: dict[str, float] | None = None, bone_names: dict[int, str] | None = None,
    reference: NDArray[np.bool_] | None = None,
) -> tuple[MarrowResult, EdemaResult, Measurements]:
    """Marrow, edema and measures on one grid (T1 already on the fluid-sensitive grid). ``reference``:
    a drawn normal-marrow region on that grid, in place of the automatic reference."""
    timings = {} if timings is None else timings
    with _timed(timings, "marrow"):
        marrow = find_marrow(t1_on_stir, stir, settings.marrow, bone_mask=bone_mask)
    with _timed(timings, "edema"):
        edema = detect_edema(t1_on_stir, stir, marrow, settings.edema, settings.lesions, reference=reference)
        marrow = absorb_lesions(marrow, edema.mask, stir.geometry.spacing_mm,
                                max(settings.marrow.lesion_reach_mm, settings.marrow.edge_reach_mm),
                                settings.marrow.reach_slices)
    with _timed(timings, "measure"):
        meas = measure(
            edema.mask, marrow.bones, stir.geometry, anatomy=settings.anatomy, scoring=settings.scoring,
            stir_ratio=edema.stir_ratio, t1_ratio=edema.t1_ratio, intense_ratio=settings.edema.intense_ratio,
            connectivity=settings.lesions.connectivity, bone_names=bone_names,
        )
    return marrow, edema, meas


def _check_outputs(out_dir: Path, paths: dict[str, Path], force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    existing = [p.name for p in paths.values() if p.exists()]
    if existing and not force:
        raise OutputExistsError(
            f"{out_dir} already holds {', '.join(existing)}; use --force to overwrite"
        )


def _mask_on_grid(path: Path, stir: Volume, dtype: Any) -> Volume:
    """A mask or label map (NIfTI) on the fluid-sensitive grid: as read when it is on that grid already,
    else resampled there by nearest neighbour (labels stay labels)."""
    from .io.nifti import read_nifti
    from .register import resample_to

    m = read_nifti(path, dtype=dtype)
    return m if m.geometry.same_grid(stir.geometry, tol_mm=1e-2) else resample_to(
        m, stir.geometry, None, interpolation="nearest")


def _reference_mask(path: Path, stir: Volume) -> NDArray[np.bool_]:
    """A drawn normal-marrow region (NIfTI, non-zero inside) on the fluid-sensitive grid; an error
    naming the file when too little of it lands there."""
    from .edema import MIN_REFERENCE_VOXELS

    ref = np.asarray(_mask_on_grid(path, stir, np.float32).array) > 0.5
    if int(ref.sum()) < MIN_REFERENCE_VOXELS:
        raise InputError(f"{path}: the reference mask has {int(ref.sum())} voxels on the fluid-sensitive image's "
                         f"grid (at least {MIN_REFERENCE_VOXELS} needed): is it empty, or drawn on another scan?")
    return ref


def run_study(
    inp: StudyInput,
    out_dir: str | os.PathLike[str] | None,
    *,
    settings: PipelineSettings | None = None,
    force: bool = False,
    layout: str = "flat",
) -> StudyResult:
    """Process one study and (if ``out_dir`` is given) write the outputs.

    Outputs are written into a temporary folder beside ``out_dir`` and moved in
    only when complete, ``report.json`` last; a failure leaves ``out_dir`` as it
    was. Existing outputs are replaced only with ``force``. ``layout`` names the
    files (see :func:`output_paths`).
    """
    from .report import build_report

    settings = settings or load_settings(None)
    out = Path(out_dir) if out_dir is not None else None
    paths = output_paths(out, inp, layout) if out is not None else {}
    if out is not None:
        _check_outputs(out, paths, force)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    t1_native, stir, notes = load_pair(inp, timings)
    # a drawn reference is checked before the registration's time is spent
    reference = _reference_mask(inp.reference_mask, stir) if inp.reference_mask is not None else None
    with _timed(timings, "register"):
        t1, reg_info = _register(t1_native, stir, settings, notes)
    t1_meta = _series_meta(t1_native)
    del t1_native  # the T1 on its own grid is not used again: free it before detection
    bone_mask = None
    bone_names = None
    if inp.bone_mask is not None:
        from .regions import names_for_bone_mask_file

        bone_mask = _mask_on_grid(inp.bone_mask, stir, np.int32)
        bone_names = names_for_bone_mask_file(inp.bone_mask, bone_mask.array, settings.anatomy)
    marrow, edema, meas = detect(t1, stir, settings, bone_mask=bone_mask, timings=timings, bone_names=bone_names,
                                 reference=reference)
    notes.extend(meas.warnings)
    coverage = marrow.levels["t1_body_coverage"]  # find_marrow always records it
    if coverage < T1_COVERAGE_NOTE:
        notes.append(f"the T1 reaches only {100 * coverage:.0f} % of the body on the fluid-sensitive image "
                     f"({marrow.levels['t1_uncovered_body_ml']:.0f} mL not reached): BME is judged only where it "
                     "reaches (T1 hypointensity cannot be judged elsewhere); bones or regions missing from the "
                     "report may simply lie outside the T1's slab")
    if not marrow.mask.any():
        why = ("no joint cortex (dark on T1 and on the fluid-sensitive image) was found to search beside"
               if marrow.levels.get("joint_cortex_ml", 1.0) == 0 else "nothing looked like marrow")
        notes.append(f"no marrow found ({why}): a BME volume of 0 here means nothing was searched; "
                     f"check the series and the preset (--pipeline {settings.name})")
    inputs: dict[str, Any] = {"t1": t1_meta, "stir": _series_meta(stir)}
    if bone_mask is not None:
        labels = np.unique(np.asarray(bone_mask.array))
        inputs["bone_mask"] = {"path": str(inp.bone_mask), "labels": [int(v) for v in labels if v != 0],
                               "voxels": int(np.count_nonzero(bone_mask.array))}
    if reference is not None:
        inputs["reference_mask"] = {"path": str(inp.reference_mask), "voxels": int(reference.sum()),
                                    "ml": round(float(reference.sum() * stir.geometry.voxel_volume_ml), 3)}
    result = StudyResult(t1=t1, stir=stir, marrow=marrow, edema=edema, measurements=meas,
                         registration=reg_info, inputs=inputs, settings=settings, timings_s=timings,
                         warnings=notes)
    if out is not None:
        with _timed(timings, "write"):
            _write_outputs(result, paths, force=force)
            if layout == "bids":
                _write_dataset_description(out)
    timings["total"] = round(time.perf_counter() - t_start, 4)
    result.report = build_report(result)
    if out is not None:
        from .report import write_json

        write_json(result.report, paths["report.json"])
    return result


def _write_outputs(result: StudyResult, paths: dict[str, Path], *, force: bool) -> None:
    """Write every file but report.json into a temp folder, then move them to ``paths``."""
    import shutil
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from .io.nifti import write_nifti

    out = paths["report.json"].parent
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bmeseg-", dir=out))
    try:
        g = result.stir
        # copy=False: the arrays usually have these dtypes already (no full-volume copies)
        niftis = [
            (g.with_array(result.measurements.lesion_labels.astype(np.uint8, copy=False)), tmp / "bme_mask.nii.gz"),
            (g.with_array(result.marrow.bones.astype(np.uint8, copy=False)), tmp / "marrow_mask.nii.gz"),
            (g.with_array(result.stir.array.astype(np.float32, copy=False)), tmp / "stir.nii.gz"),
            (result.t1.with_array(result.t1.array.astype(np.float32, copy=False)), tmp / "t1_registered.nii.gz"),
        ]
        # writing them is mostly zlib, which releases the GIL: it runs on a second thread while the
        # tables, the SEG and the QA pictures are made here
        with ThreadPoolExecutor(max_workers=1) as pool:
            written = pool.submit(lambda: [write_nifti(v, p) for v, p in niftis])
            # report tables and DICOM SEG (each writer adds its names to OUTPUT_FILES)
            from .report import write_tables_and_seg

            result.warnings.extend(write_tables_and_seg(result, tmp))
            from .qa.study import write_run_pictures

            report_name = paths["report.json"].name
            study_name = report_name.split("_desc-")[0] if report_name != "report.json" else out.resolve().name
            write_run_pictures(result, tmp, name=study_name)  # never fails the run; notes why not
            written.result()
        if force and paths["report.json"].exists():
            paths["report.json"].unlink()  # an old report must not vouch for new files
        for name in OUTPUT_FILES:
            if (tmp / name).exists():
                os.replace(tmp / name, paths[name])
            elif force and paths[name].exists():
                paths[name].unlink()  # e.g. an old bme_seg.dcm when this run found no BME
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
