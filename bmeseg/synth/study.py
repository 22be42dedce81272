"""Synthetic studies with known truth: phantom -> DICOM series + truth maps + ``truth.json``.

Frames: the phantom's frame *is* the fluid-sensitive (STIR / PD-FS) series'
frame. Patient motion (``StudySpec.motion_*``) moves the anatomy for the T1
series only: a phantom point ``x`` is seen by the T1 series at
``M x`` with ``M = truth['motion']['t1_from_stir_lps']`` (4x4, LPS mm). That is
the transform a registration with the STIR as fixed image and the T1 as
moving image should recover (ITK convention: fixed point -> moving point).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import OutputExistsError
from ..io.dicom_write import MRAcquisition, new_uid, write_dicom_series
from ..io.nifti import write_nifti
from ..volume import Geometry, Volume
from .acquire import bias_field, plane_geometry, rician_noise, rigid_matrix, sample_labels, sample_signal
from .knee import KNEE_EXTENT_LPS_MM, build_knee, knee_lesion_site
from .phantom import FineGrid, LesionTruth, Phantom
from .tissues import Compartment, SequenceParams, Tissue, compartment_signal

__all__ = ["LesionSpec", "SeriesTruth", "StudySpec", "StudyTruth", "build_phantom", "make_study"]

log = logging.getLogger(__name__)

_VENDORS = ("siemens", "ge", "philips")
_PLANES = ("sagittal", "coronal", "axial")


@dataclass(frozen=True)
class LesionSpec:
    """One BME lesion to insert.

    Parameters
    ----------
    bone : str
        ``'femur'``, ``'tibia'``, ``'patella'`` or ``'fibula'`` (knee).
    volume_ml : float
        Volume of the lesion (membership >= 0.5, inside marrow), mL; 0.2-15 is typical.
    location : str
        A named subchondral site (:data:`bmeseg.synth.knee.KNEE_LOCATIONS`) or ``'random'``.
    edema_fraction : float
        Edema-water fraction at the core (0-1).
    edge_mm : float
        Logistic width of the ill-defined border, mm.
    """

    bone: str = "femur"
    volume_ml: float = 3.0
    location: str = "random"
    edema_fraction: float = 0.95
    edge_mm: float = 1.0


@dataclass(frozen=True)
class StudySpec:
    """Everything that defines a synthetic study (with ``seed``, it fixes every pixel).

    Parameters
    ----------
    anatomy : str
        ``'knee'`` (a right knee). ``'sij'`` is planned.
    field_strength_t : float
        1.5 or 3.0; picks relaxation times and TI.
    vendor : str
        ``'siemens'``, ``'ge'`` or ``'philips'``: series names and header style.
    fluid_type : str
        ``'stir'`` (magnitude IR) or ``'pdfs'`` (PD TSE with spectral fat saturation).
    t1_plane, fluid_plane : str
        ``'sagittal'``, ``'coronal'`` or ``'axial'``.
    t1_matrix, fluid_matrix : (int, int)
        ``(columns, rows)``.
    t1_slices, fluid_slices : int
    fov_mm : float
        Square in-plane field of view, mm (both series).
    slice_thickness_mm, slice_gap_mm : float
        Slice thickness and gap between slices, mm.
    t1_oblique_deg, fluid_oblique_deg : (float, float, float)
        Rotation vectors (degrees about L, P, S) tilting each series' plane.
    center_offset_mm : (float, float, float)
        Shift of both slabs from the anatomy's default centre, LPS mm.
    snr : float
        Mean muscle signal / noise standard deviation (per quadrature channel).
    bias_strength : float
        Standard deviation of the log coil-sensitivity field over the slab.
    motion_rot_deg, motion_trans_mm : (float, float, float)
        Rigid motion of the anatomy between the fluid-sensitive and the T1 series
        (rotation vector in degrees about the anatomy centre; translation in mm).
    lesions : tuple of LesionSpec
    effusion : float
        0-1 joint effusion.
    red_marrow, vessel, cyst, physeal_scar : bool
        Mimics / extra anatomy (see :func:`bmeseg.synth.knee.build_knee`).
    extra_pdfs : bool
        With ``fluid_type='stir'``, also write a fat-saturated PD series.
    localizer : bool
        Write a 3-plane localizer series (3 slices, ImageType LOCALIZER).
    phantom_res_mm : float
        Fine-grid voxel size, mm.
    supersample_mm : float
        Partial-volume sub-sample pitch, mm.
    """

    anatomy: str = "knee"
    field_strength_t: float = 1.5
    vendor: str = "siemens"
    fluid_type: str = "stir"
    t1_plane: str = "sagittal"
    fluid_plane: str = "sagittal"
    t1_matrix: tuple[int, int] = (256, 256)
    fluid_matrix: tuple[int, int] = (224, 224)
    t1_slices: int = 24
    fluid_slices: int = 24
    fov_mm: float = 140.0
    slice_thickness_mm: float = 3.5
    slice_gap_mm: float = 0.35
    t1_oblique_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    fluid_oblique_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    center_offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    snr: float = 25.0
    bias_strength: float = 0.12
    motion_rot_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    motion_trans_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    lesions: tuple[LesionSpec, ...] = ()
    effusion: float = 0.3
    red_marrow: bool = False
    vessel: bool = True
    cyst: bool = False
    physeal_scar: bool = True
    extra_pdfs: bool = False
    localizer: bool = False
    phantom_res_mm: float = 0.5
    supersample_mm: float = 0.75

    def __post_init__(self) -> None:
        _one_of("anatomy", self.anatomy, ("knee",))
        _one_of("vendor", self.vendor, _VENDORS)
        _one_of("fluid_type", self.fluid_type, ("stir", "pdfs"))
        _one_of("t1_plane", self.t1_plane, _PLANES)
        _one_of("fluid_plane", self.fluid_plane, _PLANES)
        if self.snr <= 0:
            raise ValueError(f"'snr' must be > 0; got {self.snr}")
        object.__setattr__(self, "lesions", tuple(self.lesions))

    @classmethod
    def sample(cls) -> StudySpec:
        """The committed demo (``sample_data/knee_demo``): 1.5 T Siemens, sagittal T1 + TIRM."""
        return cls(
            motion_rot_deg=(2.0, 0.0, 0.0),
            motion_trans_mm=(0.0, 1.5, -1.3),
            lesions=(LesionSpec("femur", 6.0, "medial_condyle"), LesionSpec("tibia", 2.0, "lateral_plateau")),
            effusion=0.3,
            localizer=True,
        )

    @classmethod
    def tiny(cls, **changes: Any) -> StudySpec:
        """A small, fast study for tests (1 mm phantom, 96x96 matrices, 3 mm slices)."""
        base = cls(
            t1_matrix=(96, 96), fluid_matrix=(80, 80), t1_slices=16, fluid_slices=16,
            fov_mm=130.0, slice_thickness_mm=3.0, slice_gap_mm=0.6, center_offset_mm=(8.0, 0.0, 0.0),
            phantom_res_mm=1.0, supersample_mm=1.0,
            lesions=(LesionSpec("femur", 4.0, "medial_condyle"),),
        )
        return replace(base, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"'{name}' must be one of {set(allowed)}; got {value!r}")


# ----------------------------------------------------------------- protocols


@dataclass(frozen=True)
class _Protocol:
    role: str  # 't1', 'stir', 'pdfs', 'localizer'
    seq: SequenceParams
    acq: MRAcquisition


def _protocol(role: str, spec: StudySpec, plane: str, series_number: int) -> _Protocol:
    """Vendor-flavoured sequence parameters and header cues for one series."""
    b0 = spec.field_strength_t
    hi = b0 > 2.0
    v = spec.vendor
    short = {"siemens": {"sagittal": "sag", "coronal": "cor", "axial": "tra"},
             "ge": {"sagittal": "SAG", "coronal": "COR", "axial": "AX"},
             "philips": {"sagittal": "SAG", "coronal": "COR", "axial": "TRA"}}[v][plane]
    vendor_tags: dict[str, Any] = {
        "siemens": {"Manufacturer": "SIEMENS", "ManufacturerModelName": "Skyra" if hi else "Aera",
                    "SoftwareVersions": "syngo MR E11"},
        "ge": {"Manufacturer": "GE MEDICAL SYSTEMS",
               "ManufacturerModelName": "SIGNA Premier" if hi else "Optima MR450w",
               "SoftwareVersions": "28\\LX\\MR Software release:RX28.0_R04"},
        "philips": {"Manufacturer": "Philips Medical Systems",
                    "ManufacturerModelName": "Ingenia" if hi else "Achieva",
                    "SoftwareVersions": "5.6.1\\5.6.1.2"},
    }[v]
    ti = 220.0 if hi else 150.0
    if role == "t1":
        seq = SequenceParams("se", tr_ms=700.0 if hi else 600.0, te_ms=11.0 if v != "ge" else 10.0)
        names = {"siemens": (f"t1_tse_{short}", "SE", "SK\\SP\\OSP", "", "*tse2d1_3", 150.0, 3),
                 "ge": (f"{short} T1", "SE", "SK\\OSP", "FAST_GEMS\\NPW_GEMS", "fse-xl", 90.0, 3),
                 "philips": ("T1W_TSE", "SE", "SK", "", "TSE", 90.0, 4)}[v]
    elif role == "stir":
        seq = SequenceParams("stir", tr_ms=4000.0 if v != "ge" else 4200.0, te_ms=35.0 if v != "philips" else 30.0,
                             ti_ms=ti)
        names = {"siemens": (f"tirm_{short}", "SE\\IR", "SK\\SP\\MP\\OSP", "IR", "*tir2d1_11", 150.0, 11),
                 "ge": (f"{short} STIR", "IR", "SK\\MP\\OSP", "IR_GEMS\\FAST_GEMS", "fse-ir", 90.0, 10),
                 "philips": ("STIR", "IR", "SK\\MP", "", "IR-TSE", 90.0, 12)}[v]
    elif role == "pdfs":
        seq = SequenceParams("se_fs", tr_ms=3000.0, te_ms=33.0)
        names = {"siemens": (f"pd_tse_fs_{short}", "SE", "SK\\SP\\OSP", "FS", "*tse2d1_9", 150.0, 9),
                 "ge": (f"{short} PD FS", "SE", "SK\\OSP", "FAST_GEMS\\FS", "fse-xl", 90.0, 9),
                 "philips": ("PDW_SPAIR", "SE", "SK", "FS", "TSE", 90.0, 10)}[v]
    elif role == "localizer":
        seq = SequenceParams("gre", tr_ms=8.6, te_ms=4.0, flip_deg=20.0)
        names = {"siemens": ("localizer", "GR", "SP", "", "*fl2d1", 20.0, 1),
                 "ge": ("3-Plane Loc", "GR", "SS", "FAST_GEMS", "fgre", 20.0, 1),
                 "philips": ("SURVEY", "GR", "SP", "", "FFE", 20.0, 1)}[v]
    else:  # pragma: no cover - internal
        raise ValueError(role)
    desc, ss, sv, so, seqname, flip, etl = names
    image_type = ("ORIGINAL", "PRIMARY", "LOCALIZER", "M") if role == "localizer" else (
        "ORIGINAL", "PRIMARY", "M", "ND")
    extra = {
        **vendor_tags,
        "ImagingFrequency": round(42.577 * b0, 6),
        "EchoTrainLength": etl,
        "NumberOfAverages": 1.0 if role != "stir" else 2.0,
        "PixelBandwidth": 200.0 if role != "localizer" else 320.0,
        "ReceiveCoilName": {"siemens": "Knee_18", "ge": "18ch Knee", "philips": "dS Knee 16ch"}[v],
        "PatientPosition": "FFS",
        "Laterality": "R",
        "StudyDescription": "MR KNEE RIGHT W/O CONTRAST",
        "StudyID": "1",
        "AccessionNumber": "SYN0001",
        "PatientSex": "O",
        "PatientAge": "045Y",
        "InPlanePhaseEncodingDirection": "ROW" if plane == "sagittal" else "COL",
        "PercentPhaseFieldOfView": 100.0,
        "SeriesTime": f"{9 + series_number // 60:02d}{(5 + 4 * series_number) % 60:02d}00",
    }
    acq = MRAcquisition(
        series_description=desc,
        series_number=series_number,
        repetition_time_ms=seq.tr_ms,
        echo_time_ms=seq.te_ms,
        inversion_time_ms=seq.ti_ms,
        scanning_sequence=ss,
        sequence_variant=sv,
        scan_options=so,
        field_strength_t=b0,
        manufacturer=vendor_tags["Manufacturer"],
        image_type=image_type,
        protocol_name=desc if v != "philips" else f"{desc}_{short}",
        sequence_name=seqname,
        flip_angle_deg=flip,
        body_part="KNEE",
        extra=extra,
    )
    return _Protocol(role, seq, acq)


# ------------------------------------------------------------------ results


@dataclass(frozen=True)
class SeriesTruth:
    """What was written for one series."""

    role: str
    series_description: str
    series_number: int
    series_uid: str
    directory: Path
    files: tuple[Path, ...]
    geometry: Geometry
    slice_thickness_mm: float
    sequence: SequenceParams
    anatomy_moved: bool
    noise_sigma: float

    def as_dict(self, root: Path) -> dict[str, Any]:
        g = self.geometry
        return {
            "role": self.role,
            "series_description": self.series_description,
            "series_number": self.series_number,
            "series_instance_uid": self.series_uid,
            "directory": os.path.relpath(self.directory, root),
            "n_files": len(self.files),
            "shape": list(g.shape),
            "spacing_mm": [round(s, 6) for s in g.spacing_mm],
            "slice_thickness_mm": self.slice_thickness_mm,
            "origin_lps_mm": [round(s, 4) for s in g.origin_lps_mm],
            "direction": np.round(g.direction, 8).tolist(),
            "plane": g.plane(),
            "sequence": asdict(self.sequence),
            "anatomy_moved": self.anatomy_moved,
            "noise_sigma": round(self.noise_sigma, 4),
        }


@dataclass(frozen=True)
class StudyTruth:
    """What :func:`make_study` wrote, and the truth it knows.

    Attributes
    ----------
    root : Path
        The study directory.
    series : dict of str -> SeriesTruth
        Keyed by role: ``'t1'``, ``'stir'`` or ``'pdfs'`` (the fluid-sensitive one(s)), ``'localizer'``.
    fluid_role : str
        Role of the fluid-sensitive series the truth maps are on (``'stir'`` or ``'pdfs'``).
    lesions : list of LesionTruth
        In the fluid-sensitive (phantom) frame.
    mimics : list of dict
    t1_from_fluid : (4, 4) array
        LPS rigid transform: phantom / fluid-frame point -> the same anatomy in the T1 frame.
    bme_mask, bone_map, tissue_map, truth_json : Path
        Truth files (NIfTI on the fluid-sensitive grid, JSON).
    bme_labels : Volume
        The lesion label map on the fluid-sensitive grid (uint8; 0 = no BME).
    seed : int
    spec : StudySpec
    seconds : float
        Wall time of the generation.
    """

    root: Path
    series: dict[str, SeriesTruth]
    fluid_role: str
    lesions: list[LesionTruth]
    mimics: list[dict[str, Any]]
    t1_from_fluid: NDArray[np.float64]
    bme_mask: Path
    bone_map: Path
    tissue_map: Path
    truth_json: Path
    bme_labels: Volume
    seed: int
    spec: StudySpec
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The content of ``truth.json``."""
        from .. import __name__ as pkg

        spec = self.spec
        lab = self.bme_labels
        vox = lab.geometry.voxel_volume_ml
        return {
            "generator": f"{pkg}.synth",
            "seed": self.seed,
            "anatomy": spec.anatomy,
            "frame": (f"phantom = '{self.fluid_role}' series frame; lesion coordinates are LPS mm in that "
                      "frame; truth NIfTI maps are on that series' grid"),
            "fluid_sensitive_role": self.fluid_role,
            "lesions": [
                {**les.as_dict(),
                 "volume_ml_on_fluid_grid": round(float(np.count_nonzero(lab.array == les.id)) * vox, 4)}
                for les in self.lesions
            ],
            "total_bme_ml": round(sum(les.volume_ml for les in self.lesions), 4),
            "mimics": self.mimics,
            "motion": {
                "applies_to": "t1",
                "rot_deg": list(spec.motion_rot_deg),
                "trans_mm": list(spec.motion_trans_mm),
                "center_lps_mm": list(self.extra.get("motion_center_lps_mm", [])),
                "t1_from_stir_lps": np.round(self.t1_from_fluid, 8).tolist(),
                "note": "x_t1 = M @ [x_stir, 1]; ITK fixed=STIR, moving=T1 transform",
            },
            "series": {role: s.as_dict(self.root) for role, s in self.series.items()},
            "truth_files": {
                "bme_labels": os.path.relpath(self.bme_mask, self.root),
                "bone_labels": os.path.relpath(self.bone_map, self.root),
                "tissue_labels": os.path.relpath(self.tissue_map, self.root),
            },
            "bone_labels": {"1": "femur", "2": "tibia", "3": "patella", "4": "fibula"},
            "tissue_labels": {str(int(t)): t.name.lower() for t in Tissue},
            "study_instance_uid": self.extra.get("study_uid"),
            "frame_of_reference_uid": self.extra.get("frame_of_reference_uid"),
            "spec": spec.as_dict(),
        }


# ---------------------------------------------------------------- generation


def build_phantom(spec: StudySpec, *, seed: int, lo_lps_mm: Any = None, hi_lps_mm: Any = None) -> Phantom:
    """Build the fine-grid phantom (anatomy, mimics, lesions) of a study.

    Parameters
    ----------
    spec : StudySpec
    seed : int
        Seeds ``numpy.random.default_rng`` (anatomy texture, lesion shapes and sites).
    lo_lps_mm, hi_lps_mm : (3,) array, optional
        Box to build (default: what the study's series can see).
    """
    rng = np.random.default_rng([seed, 1])
    if lo_lps_mm is None or hi_lps_mm is None:
        lo_lps_mm, hi_lps_mm = _field_of_view_box(spec)
    grid = FineGrid.covering(lo_lps_mm, hi_lps_mm, spec.phantom_res_mm)
    t0 = time.perf_counter()
    ph = build_knee(grid, rng=rng, effusion=spec.effusion, red_marrow=spec.red_marrow, vessel=spec.vessel,
                    cyst=spec.cyst, physeal_scar=spec.physeal_scar)
    for ls in spec.lesions:
        bid, loc, site = knee_lesion_site(ph, ls.bone, ls.location, rng)
        ph.insert_lesion(bone_id=bid, volume_ml=ls.volume_ml, site_lps_mm=site, rng=rng, location=loc,
                         edema_fraction=ls.edema_fraction, edge_mm=ls.edge_mm)
    log.debug("phantom %s built in %.2f s", grid.shape, time.perf_counter() - t0)
    return ph


def _center(spec: StudySpec) -> NDArray[np.float64]:
    from .knee import KNEE_CENTER_LPS_MM

    return np.asarray(KNEE_CENTER_LPS_MM) + np.asarray(spec.center_offset_mm)


def _series_geometries(spec: StudySpec) -> dict[str, tuple[Geometry, float]]:
    c = _center(spec)
    spacing = spec.slice_thickness_mm + spec.slice_gap_mm
    out = {
        "t1": (plane_geometry(spec.t1_plane, matrix=spec.t1_matrix, fov_mm=spec.fov_mm, n_slices=spec.t1_slices,
                              slice_spacing_mm=spacing, center_lps_mm=c, oblique_deg=spec.t1_oblique_deg),
               spec.slice_thickness_mm),
        "fluid": (plane_geometry(spec.fluid_plane, matrix=spec.fluid_matrix, fov_mm=spec.fov_mm,
                                 n_slices=spec.fluid_slices, slice_spacing_mm=spacing, center_lps_mm=c,
                                 oblique_deg=spec.fluid_oblique_deg),
                  spec.slice_thickness_mm),
    }
    if spec.localizer:
        loc_fov = spec.fov_mm * 1.15
        for plane in _PLANES:
            out[f"loc_{plane}"] = (plane_geometry(plane, matrix=(128, 128), fov_mm=loc_fov, n_slices=1,
                                                  slice_spacing_mm=7.0, center_lps_mm=c), 7.0)
    return out


def _field_of_view_box(spec: StudySpec) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """LPS box covering every series' slab (plus motion margin), clipped to the anatomy."""
    pts = []
    for g, thick in _series_geometries(spec).values():
        n = np.asarray(g.shape) - 1
        corners = np.array([[i, j, k] for i in (-0.5, n[0] + 0.5) for j in (-0.5, n[1] + 0.5)
                            for k in (-0.5 - thick / g.spacing_mm[2] / 2, n[2] + 0.5 + thick / g.spacing_mm[2] / 2)])
        pts.append(g.index_to_lps(corners))
    allp = np.concatenate(pts)
    margin = 3.0 + float(np.max(np.abs(spec.motion_trans_mm))) + 0.02 * float(np.max(np.abs(spec.motion_rot_deg))) * 100
    lo = np.maximum(allp.min(axis=0) - margin, KNEE_EXTENT_LPS_MM[0])
    hi = np.minimum(allp.max(axis=0) + margin, KNEE_EXTENT_LPS_MM[1])
    return lo, hi


def _acquire(ph: Phantom, proto: _Protocol, geom: Geometry, thickness: float, spec: StudySpec, *,
             anatomy_from_world: NDArray[np.float64] | None, rng: np.random.Generator) -> tuple[Volume, float]:
    sig = ph.signal_map(proto.seq, spec.field_strength_t)
    img = np.abs(sample_signal(sig, ph.grid, geom, slice_thickness_mm=thickness,
                               anatomy_from_world=anatomy_from_world, supersample_mm=spec.supersample_mm))
    del sig
    ref = abs(compartment_signal(proto.seq, spec.field_strength_t)[Compartment.MUSCLE])
    gain = 400.0 / ref * float(rng.uniform(0.8, 1.25))
    if spec.bias_strength > 0 and proto.role != "localizer":
        img = img * bias_field(geom, strength=spec.bias_strength, rng=rng)
    img = img * gain
    sigma = 400.0 / spec.snr
    img = rician_noise(img, sigma=sigma, rng=rng)
    return Volume(np.rint(img).astype(np.float32), geom), sigma


def make_study(out_dir: str | os.PathLike[str], spec: StudySpec, *, seed: int, layout: str = "messy",
               overwrite: bool = False) -> StudyTruth:
    """Generate a synthetic study: DICOM series, truth maps and ``truth.json``.

    Parameters
    ----------
    out_dir : path
        Created if needed. Receives ``dicom/`` and ``truth/``.
    spec : StudySpec
    seed : int
        Fixes every random choice (pixels and UIDs of studies/series). SOP Instance UIDs
        are random (the DICOM writer makes them), so files differ byte-wise between runs.
    layout : {'messy', 'tidy'}
        ``'messy'``: ``dicom/series_NNN/IMnnnnn`` with file names not in slice order;
        ``'tidy'``: ``dicom/<number>_<description>/IM_0001.dcm`` in slice order.
    overwrite : bool
        Replace an existing ``dicom/`` and ``truth/`` in ``out_dir`` (otherwise
        :class:`~bmeseg.errors.OutputExistsError`).

    Returns
    -------
    StudyTruth

    Notes
    -----
    Truth maps (NIfTI, on the fluid-sensitive series' grid):

    * ``truth/bme_labels.nii.gz``: uint8 lesion id per voxel (majority of the voxel's
      slice-profile footprint, i.e. partial-volume fraction >= 0.5), 0 = none;
    * ``truth/bone_labels.nii.gz``: 1 femur, 2 tibia, 3 patella, 4 fibula (majority);
    * ``truth/tissue_labels.nii.gz``: :class:`~bmeseg.synth.tissues.Tissue` (majority).
    """
    _one_of("layout", layout, ("messy", "tidy"))
    t_start = time.perf_counter()
    root = Path(out_dir)
    for sub in ("dicom", "truth"):
        if (root / sub).exists():
            if not overwrite:
                raise OutputExistsError(f"{root / sub} exists; pass overwrite=True to replace it")
            shutil.rmtree(root / sub)
    rng = np.random.default_rng([seed, 2])
    ph = build_phantom(spec, seed=seed)
    geoms = _series_geometries(spec)
    center = _center(spec)
    m = rigid_matrix(spec.motion_rot_deg, spec.motion_trans_mm, center)
    moved = bool(np.any(spec.motion_rot_deg) or np.any(spec.motion_trans_mm))

    study_uid = new_uid(f"bmeseg-synth-study-{seed}-{spec!r}")
    for_uid = new_uid(f"bmeseg-synth-for-{seed}-{spec!r}")
    fluid_role = spec.fluid_type
    plan: list[tuple[str, str, int]] = []  # (role, geometry key, series number)
    n = 1
    if spec.localizer:
        plan.append(("localizer", "loc", n))
        n += 1
    plan.append(("t1", "t1", n + 1))
    plan.append((fluid_role, "fluid", n + 2))
    if spec.extra_pdfs and fluid_role == "stir":
        plan.append(("pdfs", "fluid", n + 3))

    series: dict[str, SeriesTruth] = {}
    for idx, (role, gkey, number) in enumerate(plan, start=1):
        plane = spec.t1_plane if role == "t1" else spec.fluid_plane
        proto = _protocol(role, spec, plane, number)
        series_uid = new_uid(f"bmeseg-synth-series-{seed}-{role}-{spec!r}")
        a_from_w = np.linalg.inv(m) if (role == "t1" and moved) else None
        if layout == "messy":
            sdir = root / "dicom" / f"series_{idx:03d}"
        else:
            sdir = root / "dicom" / f"{number:03d}_{proto.acq.series_description}"
        if role == "localizer":
            files: list[Path] = []
            sigma = 0.0
            for inst, plane_name in enumerate(_PLANES, start=1):
                geom, thick = geoms[f"loc_{plane_name}"]
                vol, sigma = _acquire(ph, proto, geom, thick, spec, anatomy_from_world=None, rng=rng)
                acq = replace(proto.acq, extra={**proto.acq.extra, "InstanceNumber": inst,
                                                "SliceThickness": thick})
                name = f"IM{rng.integers(10000, 99999):05d}" if layout == "messy" else f"IM_{inst:04d}.dcm"
                files += write_dicom_series(vol, sdir, acq, study_uid=study_uid, frame_of_reference_uid=for_uid,
                                            series_uid=series_uid, file_names=[name], uid_seed=f"{seed}")
            series[role] = SeriesTruth(role, proto.acq.series_description, number, series_uid, sdir, tuple(files),
                                       geoms["loc_sagittal"][0], 7.0, proto.seq, False, sigma)
            continue
        geom, thick = geoms[gkey]
        vol, sigma = _acquire(ph, proto, geom, thick, spec, anatomy_from_world=a_from_w, rng=rng)
        nk = geom.shape[2]
        if layout == "messy":
            ids = rng.permutation(np.arange(1, nk + 1)) * 7 + int(rng.integers(100, 900))
            names = [f"IM{i:05d}" for i in ids]
        else:
            names = [f"IM_{k + 1:04d}.dcm" for k in range(nk)]
        acq = replace(proto.acq, extra={**proto.acq.extra, "SliceThickness": thick})
        files = write_dicom_series(vol, sdir, acq, study_uid=study_uid, frame_of_reference_uid=for_uid,
                                   series_uid=series_uid, file_names=names, uid_seed=f"{seed}")
        series[role] = SeriesTruth(role, proto.acq.series_description, number, series_uid, sdir, tuple(files),
                                   geom, thick, proto.seq, role == "t1" and moved, sigma)
        log.info("wrote %s (%s) %s to %s", role, proto.acq.series_description, geom.shape, sdir)

    # truth on the fluid-sensitive grid
    fgeom, fthick = geoms["fluid"]
    tdir = root / "truth"
    tdir.mkdir(parents=True, exist_ok=True)
    kw = {"slice_thickness_mm": fthick, "supersample_mm": spec.supersample_mm}
    lesion_lab, _ = sample_labels(ph.lesion, ph.grid, fgeom, values=[les.id for les in ph.lesions], **kw)
    bone_lab, _ = sample_labels(ph.bone, ph.grid, fgeom, values=sorted(ph.bone_names), **kw)
    tissue_lab, _ = sample_labels(ph.tissue, ph.grid, fgeom, values=[int(t) for t in Tissue if t], **kw)
    bme = Volume(lesion_lab, fgeom)
    for les in ph.lesions:
        seen = np.count_nonzero(lesion_lab == les.id) * fgeom.voxel_volume_ml
        if seen < 0.8 * les.volume_ml:
            log.warning("lesion %d (%s %s, %.2f mL) is only %.2f mL on the %s grid: partly outside the slab?",
                        les.id, les.bone, les.location, les.volume_ml, seen, fluid_role)
    bme_path = write_nifti(bme, tdir / "bme_labels.nii.gz")
    bone_path = write_nifti(Volume(bone_lab, fgeom), tdir / "bone_labels.nii.gz")
    tissue_path = write_nifti(Volume(tissue_lab, fgeom), tdir / "tissue_labels.nii.gz")

    truth = StudyTruth(
        root=root, series=series, fluid_role=fluid_role, lesions=list(ph.lesions), mimics=list(ph.mimics),
        t1_from_fluid=m if moved else np.eye(4), bme_mask=bme_path, bone_map=bone_path, tissue_map=tissue_path,
        truth_json=tdir / "truth.json", bme_labels=bme, seed=seed, spec=spec,
        seconds=time.perf_counter() - t_start,
        extra={"study_uid": study_uid, "frame_of_reference_uid": for_uid,
               "motion_center_lps_mm": [float(v) for v in center]},
    )
    from ..io.atomic import atomic_path

    with atomic_path(truth.truth_json) as tmp:
        Path(tmp).write_text(json.dumps(truth.as_dict(), indent=1, default=_json_default) + "\n")
    log.info("study written to %s in %.1f s", root, truth.seconds)
    return truth


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
