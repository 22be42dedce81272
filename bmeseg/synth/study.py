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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import OutputExistsError
from ..io.dicom_write import MRAcquisition, new_uid, write_dicom_series
from ..io.nifti import write_nifti
from ..volume import Geometry, Volume
from .acquire import bias_field, plane_geometry, rician_noise, rigid_matrix, sample_labels, sample_signal
from .knee import KNEE_CENTER_LPS_MM, KNEE_EXTENT_LPS_MM, KNEE_LOCATIONS, build_knee, knee_lesion_site
from .phantom import BONE_NAMES, FineGrid, LesionTruth, Phantom, smoothstep
from .sij import (
    SIJ_BONE_NAMES,
    SIJ_CENTER_LPS_MM,
    SIJ_EXTENT_LPS_MM,
    SIJ_LOCATIONS,
    SIJ_TILT_DEG,
    build_sij,
    sij_lesion_site,
)
from .tissues import KNEE_TISSUES, Compartment, SequenceParams, Tissue, compartment_signal

__all__ = ["ANATOMIES", "LesionSpec", "SeriesTruth", "StudySpec", "StudyTruth", "build_phantom", "make_study"]

log = logging.getLogger(__name__)

_VENDORS = ("siemens", "ge", "philips")
_PLANES = ("sagittal", "coronal", "axial")


@dataclass(frozen=True)
class LesionSpec:
    """One BME lesion to insert.

    Parameters
    ----------
    bone : str
        Knee: ``'femur'``, ``'tibia'``, ``'patella'`` or ``'fibula'``; SIJ: ``'sacrum'``,
        ``'ilium_left'`` or ``'ilium_right'``. ``'auto'`` (default): the bone of
        ``location`` (knee: femur when ``location='random'``; SIJ: any quadrant).
    volume_ml : float
        Volume of the lesion (membership >= 0.5, inside marrow), mL; 0.2-15 is typical.
    location : str
        A named subchondral site or ``'random'``: knee
        :data:`bmeseg.synth.knee.KNEE_LOCATIONS`; SIJ :data:`bmeseg.synth.sij.SIJ_LOCATIONS`
        (SPARCC quadrants such as ``'LEFT_ILIAC_UPPER'``, ``'RIGHT_SACRAL_LOWER'``).
    edema_fraction : float
        Edema-water fraction at the core (0-1).
    edge_mm : float
        Logistic width of the ill-defined border, mm.
    deep : bool
        Reach >= 12 mm below the joint surface (a SPARCC "deep" lesion, >= 10 mm);
        the achieved depth is ``LesionTruth.max_depth_mm`` (SIJ).
    """

    bone: str = "auto"
    volume_ml: float = 3.0
    location: str = "random"
    edema_fraction: float = 0.95
    edge_mm: float = 1.0
    deep: bool = False

    def __repr__(self) -> str:
        return _compat_repr(self, _LESION_V1)

    def as_dict(self) -> dict[str, Any]:
        return _compat_dict(self, _LESION_V1)


@dataclass(frozen=True)
class StudySpec:
    """Everything that defines a synthetic study (with ``seed``, it fixes every pixel).

    Parameters
    ----------
    anatomy : str
        ``'knee'`` (a right knee) or ``'sij'`` (sacroiliac joints, pelvis; see
        :meth:`sij_sample`). The anatomy fixes the default field-of-view centre,
        the bones and the lesion sites (:data:`ANATOMIES`).
    field_strength_t : float
        1.5 or 3.0; picks relaxation times and TI.
    vendor : str
        ``'siemens'``, ``'ge'`` or ``'philips'``: series names and header style.
    fluid_type : str
        ``'stir'`` (magnitude IR), ``'pdfs'`` (PD TSE with spectral fat saturation, TE 33 ms)
        or ``'t2fs'`` (T2 TSE with spectral fat saturation, TE 70-80 ms).
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
        0-1 joint effusion (SIJ: width of the joint's fluid line, 0.4-1.6 mm).
    red_marrow, vessel, cyst, physeal_scar : bool
        Mimics / extra anatomy (see :func:`bmeseg.synth.knee.build_knee` and
        :func:`bmeseg.synth.sij.build_sij`; for SIJ ``physeal_scar`` draws the sacral
        fusion lines and ``cyst`` is ignored).
    extra_pdfs : bool
        With ``fluid_type='stir'``, also write a fat-saturated PD series.
    localizer : bool
        Write a 3-plane localizer series (3 slices, ImageType LOCALIZER).
    phantom_res_mm : float
        Fine-grid voxel size, mm.
    supersample_mm : float
        Partial-volume sub-sample pitch, mm.
    fat_sat_edge : float
        0-1: incomplete fat suppression towards the edge of the fluid-sensitive
        series' field of view (0 = none). It is the fraction of fat suppression
        lost at the FOV corners (zero inside 55 % of the half-FOV, smooth ramp
        outward, centre offset at random). ``'pdfs'``/``'t2fs'``: the spectral fat residual
        rises to it (B0 off-resonance). ``'stir'``: the fat compartment's signal
        is pushed away from its null by that fraction of its un-inverted
        (spin-echo) signal, keeping its sign (phenomenological: imperfect
        inversion / TI no longer at the fat null); water signals are unchanged.
        Bright fat, and brighter fatty marrow, near the edge: a BME mimic.
    chemical_shift : bool
        Chemical-shift displacement of fat along the frequency-encoding direction
        (3.4 ppm at the header's 200 Hz/pixel: 1.1 pixel at 1.5 T, 2.2 at 3 T) on
        every series: a bright rim on one side of each fat/water interface
        (cortex, joint) and a dark one on the other.
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
    # fields added after the knee demo was committed: left out of repr()/as_dict() at
    # their defaults so that the demo's UIDs and truth.json stay byte-identical
    fat_sat_edge: float = 0.0
    chemical_shift: bool = False

    def __repr__(self) -> str:
        return _compat_repr(self, _SPEC_V1)

    def __post_init__(self) -> None:
        _one_of("anatomy", self.anatomy, tuple(ANATOMIES))
        if not 0.0 <= self.fat_sat_edge <= 1.0:
            raise ValueError(f"'fat_sat_edge' must be in [0, 1]; got {self.fat_sat_edge}")
        _one_of("vendor", self.vendor, _VENDORS)
        _one_of("fluid_type", self.fluid_type, ("stir", "pdfs", "t2fs"))
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
    def sij_sample(cls) -> StudySpec:
        """A typical SIJ study: 1.5 T Siemens, semicoronal T1 TSE + TIRM, 4 mm slices, FOV 280 mm.

        Semicoronal = coronal tilted 25 degrees about L (parallel to the dorsal S2
        cortex); T1 320x320 (0.875 mm pixels), STIR 256x256 (1.09 mm), 16 slices of
        4 mm with a 0.4 mm gap; 0.8 mm phantom. Two lesions (left iliac upper,
        right sacral lower); mild motion between the series.
        """
        tilt = (SIJ_TILT_DEG, 0.0, 0.0)
        return cls(
            anatomy="sij", t1_plane="coronal", fluid_plane="coronal", t1_matrix=(320, 320),
            fluid_matrix=(256, 256), t1_slices=16, fluid_slices=16, fov_mm=280.0, slice_thickness_mm=4.0,
            slice_gap_mm=0.4, t1_oblique_deg=tilt, fluid_oblique_deg=tilt, snr=22.0, bias_strength=0.15,
            motion_rot_deg=(1.5, 0.0, 0.0), motion_trans_mm=(0.0, 1.0, -1.5),
            lesions=(LesionSpec("ilium_left", 4.0, "LEFT_ILIAC_UPPER"),
                     LesionSpec("sacrum", 1.5, "RIGHT_SACRAL_LOWER")),
            phantom_res_mm=0.8, supersample_mm=1.0,
        )

    @classmethod
    def tiny(cls, anatomy: str = "knee", **changes: Any) -> StudySpec:
        """A small, fast study for tests.

        Knee: 1 mm phantom, 96x96 matrices, 3 mm slices. SIJ: 1.2 mm phantom,
        96x96 matrices over 220 mm, 10 semicoronal 4 mm slices, one 3 mL lesion.
        """
        if anatomy == "sij":
            tilt = (SIJ_TILT_DEG, 0.0, 0.0)
            sij = cls(
                anatomy="sij", t1_plane="coronal", fluid_plane="coronal", t1_matrix=(96, 96),
                fluid_matrix=(96, 96), t1_slices=10, fluid_slices=10, fov_mm=220.0, slice_thickness_mm=4.0,
                slice_gap_mm=0.4, t1_oblique_deg=tilt, fluid_oblique_deg=tilt,
                phantom_res_mm=1.2, supersample_mm=1.2,
                lesions=(LesionSpec("ilium_left", 3.0, "LEFT_ILIAC_UPPER"),),
            )
            return replace(sij, **changes)
        _one_of("anatomy", anatomy, tuple(ANATOMIES))
        base = cls(
            t1_matrix=(96, 96), fluid_matrix=(80, 80), t1_slices=16, fluid_slices=16,
            fov_mm=130.0, slice_thickness_mm=3.0, slice_gap_mm=0.6, center_offset_mm=(8.0, 0.0, 0.0),
            phantom_res_mm=1.0, supersample_mm=1.0,
            lesions=(LesionSpec("femur", 4.0, "medial_condyle"),),
        )
        return replace(base, **changes)

    def as_dict(self) -> dict[str, Any]:
        d = _compat_dict(self, _SPEC_V1)
        d["lesions"] = tuple(ls.as_dict() for ls in self.lesions)
        return d


_LESION_V1 = ("bone", "volume_ml", "location", "edema_fraction", "edge_mm")
_SPEC_V1 = (
    "anatomy", "field_strength_t", "vendor", "fluid_type", "t1_plane", "fluid_plane", "t1_matrix", "fluid_matrix",
    "t1_slices", "fluid_slices", "fov_mm", "slice_thickness_mm", "slice_gap_mm", "t1_oblique_deg",
    "fluid_oblique_deg", "center_offset_mm", "snr", "bias_strength", "motion_rot_deg", "motion_trans_mm", "lesions",
    "effusion", "red_marrow", "vessel", "cyst", "physeal_scar", "extra_pdfs", "localizer", "phantom_res_mm",
    "supersample_mm",
)


def _shown(obj: Any, v1: tuple[str, ...]) -> list[str]:
    """Field names of ``obj`` to show: the first release's, plus later ones that are not at their default."""
    return [f.name for f in fields(obj) if f.name in v1 or getattr(obj, f.name) != f.default]


def _compat_repr(obj: Any, v1: tuple[str, ...]) -> str:
    """``dataclass`` repr without the later fields left at their defaults (seeds UIDs: keep stable)."""
    body = ", ".join(f"{n}={getattr(obj, n)!r}" for n in _shown(obj, v1))
    return f"{type(obj).__qualname__}({body})"


def _compat_dict(obj: Any, v1: tuple[str, ...]) -> dict[str, Any]:
    full = asdict(obj)
    return {n: full[n] for n in _shown(obj, v1)}


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"'{name}' must be one of {set(allowed)}; got {value!r}")


# ------------------------------------------------------------------ anatomies


@dataclass(frozen=True)
class _Anatomy:
    """What :func:`build_phantom`, the series planner and the headers need to know about one anatomy."""

    name: str
    extent_lps_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    center_lps_mm: tuple[float, float, float]
    bone_names: dict[int, str]
    locations: tuple[str, ...]
    tissues: tuple[Tissue, ...]
    build: Callable[[FineGrid, np.random.Generator, StudySpec], Phantom]
    #: (phantom, lesion spec, rng) -> (bone id, location, site LPS mm, joint mask or None)
    site: Callable[[Phantom, LesionSpec, np.random.Generator],
                   tuple[int, str, NDArray[np.float64], NDArray[np.bool_] | None]]
    header: dict[str, Any]
    coil: dict[str, str]
    body_part: str


def _knee_build(grid: FineGrid, rng: np.random.Generator, spec: StudySpec) -> Phantom:
    return build_knee(grid, rng=rng, effusion=spec.effusion, red_marrow=spec.red_marrow, vessel=spec.vessel,
                      cyst=spec.cyst, physeal_scar=spec.physeal_scar)


def _knee_site(ph: Phantom, ls: LesionSpec, rng: np.random.Generator
               ) -> tuple[int, str, NDArray[np.float64], NDArray[np.bool_] | None]:
    bone = ls.bone
    if bone == "auto":
        bone = next((b for b, locs in KNEE_LOCATIONS.items() if ls.location in locs), "femur")
    bid, loc, site = knee_lesion_site(ph, bone, ls.location, rng)
    return bid, loc, site, None


def _sij_build(grid: FineGrid, rng: np.random.Generator, spec: StudySpec) -> Phantom:
    return build_sij(grid, rng=rng, joint_fluid=spec.effusion, red_marrow=spec.red_marrow, vessel=spec.vessel,
                     fusion_lines=spec.physeal_scar)


def _sij_site(ph: Phantom, ls: LesionSpec, rng: np.random.Generator
              ) -> tuple[int, str, NDArray[np.float64], NDArray[np.bool_] | None]:
    return sij_lesion_site(ph, ls.bone, ls.location, rng)


#: per-anatomy registry (name -> extent, default FOV centre, bones, lesion sites, header cues)
ANATOMIES: dict[str, _Anatomy] = {
    "knee": _Anatomy(
        "knee", KNEE_EXTENT_LPS_MM, KNEE_CENTER_LPS_MM, dict(BONE_NAMES),
        tuple(loc for locs in KNEE_LOCATIONS.values() for loc in locs), KNEE_TISSUES, _knee_build, _knee_site,
        header={"PatientPosition": "FFS", "Laterality": "R", "StudyDescription": "MR KNEE RIGHT W/O CONTRAST"},
        coil={"siemens": "Knee_18", "ge": "18ch Knee", "philips": "dS Knee 16ch"}, body_part="KNEE"),
    "sij": _Anatomy(
        "sij", SIJ_EXTENT_LPS_MM, SIJ_CENTER_LPS_MM, dict(SIJ_BONE_NAMES), SIJ_LOCATIONS, tuple(Tissue),
        _sij_build, _sij_site,
        header={"PatientPosition": "HFS", "StudyDescription": "MR SACROILIAC JOINTS W/O CONTRAST"},
        coil={"siemens": "Body_18\\SP", "ge": "GEM AA\\GEM PA", "philips": "dS Torso 16ch"}, body_part="SIJOINT"),
}


# ----------------------------------------------------------------- protocols


@dataclass(frozen=True)
class _Protocol:
    role: str  # 't1', 'stir', 'pdfs', 't2fs', 'localizer'
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
        # pelvic STIR runs a longer echo than the knee's: on the real SIJ scans CSF in the thecal sac is
        # 3.7-6.7x muscle (median of the brightest fluid body; 1007, 1016, 2014, 2015), which the
        # signal model gives at TE ~60 ms (TE 35 ms: 2.2x, dimmer than the BME it must not be taken for)
        te = (35.0 if v != "philips" else 30.0) if spec.anatomy != "sij" else {"siemens": 61.0, "ge": 60.0,
                                                                              "philips": 58.0}[v]
        seq = SequenceParams("stir", tr_ms=4000.0 if v != "ge" else 4200.0, te_ms=te, ti_ms=ti)
        names = {"siemens": (f"tirm_{short}", "SE\\IR", "SK\\SP\\MP\\OSP", "IR", "*tir2d1_11", 150.0, 11),
                 "ge": (f"{short} STIR", "IR", "SK\\MP\\OSP", "IR_GEMS\\FAST_GEMS", "fse-ir", 90.0, 10),
                 "philips": ("STIR", "IR", "SK\\MP", "", "IR-TSE", 90.0, 12)}[v]
    elif role == "pdfs":
        seq = SequenceParams("se_fs", tr_ms=3000.0, te_ms=33.0)
        names = {"siemens": (f"pd_tse_fs_{short}", "SE", "SK\\SP\\OSP", "FS", "*tse2d1_9", 150.0, 9),
                 "ge": (f"{short} PD FS", "SE", "SK\\OSP", "FAST_GEMS\\FS", "fse-xl", 90.0, 9),
                 "philips": ("PDW_SPAIR", "SE", "SK", "FS", "TSE", 90.0, 10)}[v]
    elif role == "t2fs":
        seq = SequenceParams("se_fs", tr_ms=4000.0 if hi else 3500.0, te_ms={"siemens": 75.0, "ge": 70.0,
                                                                            "philips": 80.0}[v])
        names = {"siemens": (f"t2_tse_fs_{short}", "SE", "SK\\SP\\OSP", "FS", "*tse2d1_15", 150.0, 15),
                 "ge": (f"{short} T2 FS", "SE", "SK\\OSP", "FAST_GEMS\\FS", "fse-xl", 90.0, 16),
                 "philips": ("T2W_SPAIR", "SE", "SK", "FS", "TSE", 90.0, 18)}[v]
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
        "ReceiveCoilName": ANATOMIES[spec.anatomy].coil[v],
        **ANATOMIES[spec.anatomy].header,
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
        body_part=ANATOMIES[spec.anatomy].body_part,
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
        Keyed by role: ``'t1'``, ``'stir'``, ``'pdfs'`` or ``'t2fs'`` (the fluid-sensitive one(s)),
        ``'localizer'``.
    fluid_role : str
        Role of the fluid-sensitive series the truth maps are on (``'stir'``, ``'pdfs'`` or ``'t2fs'``).
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
        anat = ANATOMIES[spec.anatomy]
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
            "bone_labels": {str(k): v for k, v in sorted(anat.bone_names.items())},
            **({} if spec.anatomy == "knee" else {"bone_names": {str(k): v for k, v in sorted(anat.bone_names.items())}}),
            "tissue_labels": {str(int(t)): t.name.lower() for t in anat.tissues},
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
    anat = ANATOMIES[spec.anatomy]
    ph = anat.build(grid, rng, spec)
    for ls in spec.lesions:
        bid, loc, site, joint = anat.site(ph, ls, rng)
        ph.insert_lesion(bone_id=bid, volume_ml=ls.volume_ml, site_lps_mm=site, rng=rng, location=loc,
                         edema_fraction=ls.edema_fraction, edge_mm=ls.edge_mm,
                         min_depth_mm=12.0 if ls.deep else 0.0, joint=joint)
    log.debug("phantom %s built in %.2f s", grid.shape, time.perf_counter() - t0)
    return ph


def _center(spec: StudySpec) -> NDArray[np.float64]:
    return np.asarray(ANATOMIES[spec.anatomy].center_lps_mm) + np.asarray(spec.center_offset_mm)


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
    extent = ANATOMIES[spec.anatomy].extent_lps_mm
    lo = np.maximum(allp.min(axis=0) - margin, extent[0])
    hi = np.minimum(allp.max(axis=0) + margin, extent[1])
    return lo, hi


#: fat-water chemical shift, ppm; the headers' PixelBandwidth, Hz/pixel
_FAT_PPM = 3.4
_BANDWIDTH_HZ_PX = 200.0


def _fat_sat_failure(ph: Phantom, geom: Geometry, strength: float, rng: np.random.Generator
                     ) -> NDArray[np.float32]:
    """Fraction (0-``strength``) of fat suppression lost at each fine voxel, from its place in the FOV.

    In-plane distance from a slightly off-centre point (offset up to 15 % of the
    half-FOV, drawn from ``rng``) of the fluid-sensitive series, in half-FOVs:
    0 inside 0.55, rising smoothly to ``strength`` at 1.25 (the corners).
    """
    _, x, y, z = ph.grid.full()
    c = geom.index_to_lps((np.asarray(geom.shape, float) - 1) / 2)
    half = np.asarray(geom.shape[:2], float) * np.asarray(geom.spacing_mm[:2]) / 2
    off = rng.uniform(-0.15, 0.15, size=2)
    rho2 = np.zeros(ph.grid.shape, dtype=np.float32)
    for ax in range(2):
        d = geom.direction[:, ax] / half[ax]
        a = (x - c[0]) * d[0] + (y - c[1]) * d[1] + (z - c[2]) * d[2] - off[ax]
        rho2 += (a * a).astype(np.float32)
    return (strength * smoothstep(0.55, 1.25, np.sqrt(rho2))).astype(np.float32)


def _readout_shift_mm(proto: _Protocol, geom: Geometry, spec: StudySpec, plane: str) -> NDArray[np.float64]:
    """Apparent displacement of fat (LPS mm) along the frequency-encoding direction of a series."""
    # header: InPlanePhaseEncodingDirection ROW (phase along i) for sagittal, else COL
    ax = 1 if plane == "sagittal" else 0
    px = _FAT_PPM * 42.577 * spec.field_strength_t / _BANDWIDTH_HZ_PX
    return px * geom.spacing_mm[ax] * geom.direction[:, ax]


def _signal_image(ph: Phantom, proto: _Protocol, geom: Geometry, thickness: float, spec: StudySpec, *,
                  anatomy_from_world: NDArray[np.float64] | None, fat_edge: NDArray[np.float32] | None,
                  plane: str) -> NDArray[np.float32]:
    """Noise-free magnitude image of one series (with the fat mimics when the spec asks)."""
    kw = {"slice_thickness_mm": thickness, "supersample_mm": spec.supersample_mm}
    sig = ph.signal_map(proto.seq, spec.field_strength_t)
    fat_edge = fat_edge if proto.seq.kind in ("stir", "se_fs") else None
    if fat_edge is None and not spec.chemical_shift:  # the original path (knee demo bytes)
        img = np.abs(sample_signal(sig, ph.grid, geom, anatomy_from_world=anatomy_from_world, **kw))
        return img.astype(np.float32)
    fat = ph.fat_content()
    s_fat = compartment_signal(proto.seq, spec.field_strength_t)[Compartment.FAT]
    sig -= fat * np.float32(s_fat)  # water part
    fat_sig = np.full(fat.shape, s_fat, dtype=np.float32)
    if fat_edge is not None:
        seq = proto.seq
        se = compartment_signal(SequenceParams("se", tr_ms=seq.tr_ms, te_ms=seq.te_ms), spec.field_strength_t)
        if seq.kind == "se_fs":
            fat_sig += fat_edge * np.float32(se[Compartment.FAT] * (1.0 - seq.fat_residual))
        else:
            fat_sig += fat_edge * np.float32(np.sign(s_fat) * se[Compartment.FAT])
    fat_sig *= fat
    img = sample_signal(sig, ph.grid, geom, anatomy_from_world=anatomy_from_world, **kw)
    del sig
    a_fat = anatomy_from_world
    if spec.chemical_shift:
        shift = np.eye(4)
        shift[:3, 3] = -_readout_shift_mm(proto, geom, spec, plane)
        a_fat = shift if anatomy_from_world is None else anatomy_from_world @ shift
    img += sample_signal(fat_sig, ph.grid, geom, anatomy_from_world=a_fat, **kw)
    return np.abs(img).astype(np.float32)


def _acquire(ph: Phantom, proto: _Protocol, geom: Geometry, thickness: float, spec: StudySpec, *,
             anatomy_from_world: NDArray[np.float64] | None, rng: np.random.Generator,
             fat_edge: NDArray[np.float32] | None = None, plane: str = "sagittal") -> tuple[Volume, float]:
    img = _signal_image(ph, proto, geom, thickness, spec, anatomy_from_world=anatomy_from_world,
                        fat_edge=fat_edge, plane=plane)
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
    * ``truth/bone_labels.nii.gz``: knee 1 femur, 2 tibia, 3 patella, 4 fibula; SIJ 1 sacrum,
      2 ilium_left, 3 ilium_right, 4 L5, 5 L4 (majority; names in ``truth.json``);
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
    fat_edge = None
    if spec.fat_sat_edge > 0:
        fat_edge = _fat_sat_failure(ph, geoms["fluid"][0], spec.fat_sat_edge, np.random.default_rng([seed, 3]))
        ph.mimics.append({"kind": "fat_sat_edge", "series": spec.fluid_type, "strength": spec.fat_sat_edge,
                          "outside_bone": False, "note": "fat suppression fails towards the FOV edge"})
    if spec.chemical_shift:
        ph.mimics.append({"kind": "chemical_shift", "ppm": _FAT_PPM, "bandwidth_hz_px": _BANDWIDTH_HZ_PX,
                          "pixels": round(_FAT_PPM * 42.577 * spec.field_strength_t / _BANDWIDTH_HZ_PX, 3)})
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
        a_from_w = np.linalg.inv(m).astype(np.float64) if (role == "t1" and moved) else None
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
        vol, sigma = _acquire(ph, proto, geom, thick, spec, anatomy_from_world=a_from_w, rng=rng,
                              fat_edge=fat_edge, plane=plane)
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
    kw: dict[str, Any] = {"slice_thickness_mm": fthick, "supersample_mm": spec.supersample_mm}
    lesion_lab, _ = sample_labels(ph.lesion, ph.grid, fgeom, values=[les.id for les in ph.lesions], **kw)
    bone_lab, _ = sample_labels(ph.bone, ph.grid, fgeom, values=sorted(ph.bone_names), **kw)
    tissue_lab, _ = sample_labels(ph.tissue, ph.grid, fgeom, values=[int(t) for t in ANATOMIES[spec.anatomy].tissues if t], **kw)
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
