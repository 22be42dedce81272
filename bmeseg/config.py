"""Pipeline settings: frozen dataclasses, loaded from the anatomy presets in ``pipelines/*.toml``.

A preset file has one table per stage (``[registration]``, ``[marrow]``,
``[edema]``, ``[lesions]``, ``[scoring]``) plus ``[pipeline]`` (name, anatomy,
description). ``--config FILE`` overlays a user file on the chosen preset.
Unknown keys and wrong types are refused with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .register import RegistrationSettings

__all__ = [
    "EdemaSettings",
    "LesionSettings",
    "MarrowSettings",
    "PipelineSettings",
    "RegistrationSettings",
    "ScoringSettings",
    "available_pipelines",
    "load_settings",
    "pipelines_dir",
]

ANATOMIES = ("knee", "sij", "hip", "ankle", "spine", "generic")
SCHEMES = ("moaks", "sparcc", "ramris", "fraction")
SEARCHES = ("cavity", "periarticular")
BIAS_FIELDS = ("none", "n4")


@dataclass(frozen=True)
class MarrowSettings:
    """Where marrow is, when no bone mask is supplied (see :mod:`bmeseg.marrow`)."""

    # Fatty marrow is bright on T1 and dark on the fluid-sensitive image. Thresholds are
    # fractions between the scan's own reference levels (muscle-like and fat-like peaks),
    # never absolute numbers, because MR intensities are arbitrary units.
    t1_fat_level: float = 0.55
    stir_fat_level: float = 0.45
    # "cavity": fatty-marrow cavities closed by their cortex (knee, ankle, hip: adult fatty marrow);
    # "periarticular": subchondral band around the joint cortex (sacrum/ilia/spine: mixed marrow)
    search: str = "cavity"
    # bone shape: marrow cavities are large compact blobs well inside the body outline
    min_bone_ml: float = 2.0
    body_shell_mm: float = 6.0
    # erosion that separates marrow from fat bridged to it by partial volume across the cortex
    separation_mm: float = 1.5
    # closing radius that re-includes lesions which break the fatty-marrow region open
    closing_mm: float = 5.0
    # cortex-like: T1 below this fraction of the body's low (P20, muscle-like) T1 level and dark on STIR
    cortex_t1_level: float = 0.6
    # thin cortex: T1 darker than its 4 mm neighbourhood by this fraction of the muscle-to-fat range
    wall_tophat_level: float = 0.3
    # cortex on the fluid-sensitive image: below this fraction of suppressed fat (median STIR of
    # fat-like voxels) and of its 7-voxel in-plane neighbourhood's brightest level (a dark valley)
    wall_stir_ratio: float = 0.7
    # a STIR valley (as above, without the suppressed-fat test) where the T1 is below this fraction of
    # the body's low (P20, muscle-like) T1 level is cortex too: dark on both. 0 = off
    wall_valley_t1_level: float = 1.0
    # gaps in the cortex up to about twice this radius (mm) are sealed (partial volume, noise)
    wall_closing_mm: float = 1.6
    # a fat piece is a marrow cavity when at least this fraction lies inside a cortical wall
    min_enclosed: float = 0.25
    # ... and its slices are convex (solidity >= this), unless at least sure_enclosed of it is enclosed
    min_solidity: float = 0.8
    sure_enclosed: float = 0.6
    # ... in which case a lower solidity is enough (a coronal femur with its notch is U-shaped)
    min_solidity_enclosed: float = 0.66
    # gap-tolerant enclosure: the mean fraction of 8 in-plane rays (up to ray_mm) from a fat piece's
    # voxels that meet a cortical wall before the outside; a piece at least ray_enclosed enclosed
    # this way with solidity >= ray_solidity is a cavity even when a gap lets the flood fill in
    ray_enclosed: float = 0.94
    ray_solidity: float = 0.85
    ray_mm: float = 60.0
    # a cavity may also claim its in-plane convex hull (lesions biting in from the plate), still
    # only what it reaches without crossing its cortex
    hull_claims: bool = False
    # ... up to this far (mm, in-plane) from the cavity's fat
    hull_mm: float = 4.0
    # an enclosed slice region joins a cavity when this fraction of it is that cavity's fat
    enclosed_share: float = 0.3
    # non-convex fat pieces are split at necks narrower than twice this (mm) and the parts judged again
    # (a cavity joined to the fat beside it through a cortex gap); 0: off
    split_neck_mm: float = 0.0
    # a lesion found in the marrow may grow (edema hysteresis) this far (mm, in-plane) beyond the marrow
    # mask: inside the in-plane convex hull of its marrow piece and that piece's own cortex (the wall
    # within cortex_search_mm), where rays meet cortex, not on the wall (periarticular search: into the
    # marrow ground up to band_mm + this from the sacroiliac joint lines); 0: off
    lesion_reach_mm: float = 0.0
    # ... and only into voxels brighter than reach_stir_muscle x muscle on the fluid-sensitive image and
    # brighter than reach_t1_muscle x muscle on T1
    reach_stir_muscle: float = 1.1
    # ... and only where at least this fraction of the in-plane rays meets cortex (0: the hull of the
    # piece and its own cortex alone bound the reach)
    reach_rays: float = 0.94
    reach_t1_muscle: float = 0.7
    # the reach also takes the bone's footprint (marrow and reach) on the slices up to this many away,
    # where this slice's rays call it enclosed (>= ray_enclosed) and its STIR is above
    # reach_slices_stir_muscle x muscle: a lesion that replaced a slice's fat has little marrow there to
    # span it, while the bone's neighbouring slices still outline it. 0 = off
    reach_slices: int = 0
    reach_slices_stir_muscle: float = 1.5
    # how far from the fatty marrow (mm) to look for the bone's own cortical ring
    cortex_search_mm: float = 6.0
    # erosion away from the cortex, to avoid chemical-shift / partial-volume rims
    cortex_margin_mm: float = 0.0
    max_bones: int = 6
    # periarticular search: dark cortex sheets of at least this volume are joint lines / endplates
    joint_min_ml: float = 0.3
    # ... keeping only the largest few (the two SI joints, the lumbosacral disc-endplates)
    joint_sheets: int = 4
    # ... and marrow is searched within this in-plane distance (mm) of them
    band_mm: float = 20.0
    # fluid (CSF, effusion, bladder): STIR above this multiple of muscle and T1 below muscle
    fluid_stir_ratio: float = 3.0
    # ... and T1 below this multiple of muscle (fluid is dark on T1; partial volume with nerve roots
    # brings CSF in the sacral canal up to ~0.9x muscle)
    fluid_t1_level: float = 0.6
    # ... and every body of fluid of at least fluid_body_ml (thecal sac, bladder) is kept this far
    # (mm, in-plane) from the marrow: its partial-volume rim, nerve roots and epidural veins; 0: off
    fluid_body_ml: float = 1.0
    fluid_body_margin_mm: float = 0.0
    # periarticular search: ... only bodies whose median in-plane distance from the body's left-right
    # middle is at most this (mm): the thecal sac and bladder lie on the midline; a lateral "body" of
    # fluid-like signal beside a joint is more often intense BME. 0: bodies anywhere
    fluid_body_midline_mm: float = 0.0
    # periarticular search: keep only the band's voxels on marrow-like ground ("support"): smoothed T1
    # between support_t1_low and support_t1_high of the muscle-to-fat range (mixed marrow; muscle ~0, fat
    # ~1), not fluid-bright, opened by support_open_mm (cuts muscle-fat partial-volume rims), in-plane
    # pieces of at least support_min_cm2, then closed by support_close_mm (lesions and sclerosis that
    # darken T1 inside the bone) and hole-filled per slice. support_close_mm = 0: off
    support_t1_low: float = 0.1
    support_t1_high: float = 0.75
    support_open_mm: float = 2.0
    support_min_cm2: float = 2.0
    support_close_mm: float = 0.0
    # ... the hole filling counting the joint cortex (closed over the joint space) as the bone's wall, so
    # BME between marrow and the articular plate, with no marrow-like T1 left, is bone too
    support_joint_walls: bool = False
    # ... and an in-plane piece of the band's marrow ground is not bone when at least this share of its
    # outer ring (ground_fat_ring_mm wide, in-plane) is fat: T1 above support_t1_high of the
    # muscle-to-fat range and darker than muscle on the fluid-sensitive image. Marrow lies inside its
    # cortex; a bowel loop lies in fat. 1: off
    ground_fat_ring_max: float = 1.0
    ground_fat_ring_mm: float = 2.0
    # periarticular search: a lesion seeded in the marrow may also grow this far (mm, in-plane) beyond the
    # marrow ground, within band_mm + this of a joint line: BME that replaced the marrow up to the bone's
    # outer cortex is neither marrow-like on T1 nor enclosed, so the ground misses it. Lesion-like signal
    # only: the reach_* tests, and STIR below edge_stir_muscle_max x muscle (nerves, veins), not within
    # edge_vessel_mm in-plane of such a bright structure off the marrow ground. A lesion grows into it only
    # where the BME rule holds, and keeps it only up to edema.edge_max_share of the lesion. Needs the
    # marrow ground (support_close_mm > 0): without it there is no "past the ground". 0: off
    edge_reach_mm: float = 0.0
    edge_stir_muscle_max: float = 2.5
    edge_vessel_mm: float = 0.0
    # normal mixed marrow: T1 above muscle by this fraction of the muscle-to-fat range
    normal_t1_level: float = 0.1
    # periarticular search: the joint space between two cortical sheets (cartilage, a fluid line) is
    # closed into the joint by an in-plane closing of the sheets of this radius (mm; 0: off)
    joint_close_mm: float = 0.0
    # sacroiliac: split the band into sacrum and the two ilia along the joint lines (marker watershed on
    # the T1 from seeds within sacrum_seed_mm of the body's left-right middle, beyond ilium_seed_mm of it,
    # and either side of joint lines between 2 x sacrum_seed_mm and ilium_seed_mm out); where a joint
    # line is faint the band runs across it and would be one bone
    split_joint_sides: bool = False
    # periarticular search: joint lines as T1 valleys as well. A joint line is darker than the marrow
    # either side of it, though not always below cortex_t1_level x muscle (partial volume, a thin or
    # inflamed plate): voxels darker than muscle and at least joint_valley_depth below an in-plane grey
    # closing of radius joint_valley_mm (rounded to whole voxels per axis: 3 mm is 5 voxels at 0.6 mm,
    # 3 at 1.09 mm), with marrow-like T1 within joint_valley_side_mm on both sides
    # along left-right (the outer cortex of an ilium has muscle on one side) and at least
    # joint_valley_min_mm from the body's left-right middle (sacral foramina); the joint_valley_sheets
    # largest such sheets join the joint cortex. joint_valley_mm = 0: off
    joint_valley_mm: float = 0.0
    joint_valley_depth: float = 0.3
    joint_valley_side_mm: float = 6.0
    joint_valley_min_mm: float = 25.0
    joint_valley_sheets: int = 4
    sacrum_seed_mm: float = 15.0
    ilium_seed_mm: float = 75.0
    # slow coil-sensitivity (bias) correction of the T1 before marrow finding: "none" or "n4" (bmeseg.bias);
    # edema finding needs none (it compares with a local normal-marrow level)
    bias_field: str = "none"
    # coil shading measured on fat (bmeseg.bias.fat_shading), for the fat test only: degree of the
    # log-polynomial fitted to the body's loosely fat-like voxels (T1 above fat_shading_level of the
    # low-to-high range, STIR below the fat level); where it is darker than 1 - fat_shading_tolerance
    # the T1 is lifted back to within that tolerance of the scan's median fat level (never lowered). 0 = off
    fat_shading_degree: int = 0
    fat_shading_level: float = 0.3
    fat_shading_tolerance: float = 0.05


@dataclass(frozen=True)
class EdemaSettings:
    """Which marrow voxels are BME (see :mod:`bmeseg.edema`)."""

    # Tukey outlier of normal marrow on the fluid-sensitive image: Q3 + k*IQR (Hepburn et al. use 1.5)
    stir_tukey_k: float = 1.5
    # and at least this many times the local normal-marrow level
    stir_min_ratio: float = 1.3
    # T1 must be below this fraction of local normal marrow (BME is T1-hypointense)
    t1_max_ratio: float = 0.85
    # red marrow guard: T1 must also be below muscle + this fraction of the muscle-to-normal-marrow
    # gap (BME is "at or below muscle" in fatty marrow; red marrow islands sit above muscle). 1 = off
    t1_muscle_level: float = 1.0
    # muscle guard on the fluid-sensitive image: the STIR threshold is at least this many times muscle
    # (muscle's level over normal marrow's, scaled by the local marrow reference). Where normal marrow is
    # darker than muscle on STIR, a fence set on marrow alone passes muscle-like tissue. 0 = off
    stir_muscle_ratio: float = 0.0
    # large-scale smoothing (mm) for the local normal-marrow reference (bias-field aware)
    reference_sigma_mm: float = 20.0
    # the second pass's reference also leaves out normal-marrow voxels darker on STIR than the first
    # pass's lower Tukey fence Q1 - k * IQR (partial volume with fat round a thin bone: bright on T1, dark
    # on the fat-suppressed image, a mean reference pulled down there). 0 = off
    reference_dark_k: float = 0.0
    # fluid-level signal on STIR relative to normal marrow: above this is "intense" (SPARCC)
    intense_ratio: float = 3.0
    bias_correction: bool = True
    # partial volume: a lesion keeps the voxels whose STIR excess over normal marrow is at least
    # this fraction of the lesion's own core excess (see pv_core): its half-maximum outline
    # rather than the faint fringe the detection threshold reaches. 0 = off
    pv_fraction: float = 0.0
    # how that core excess is measured: "p90" (the lesion's 90th percentile) or "interior" (the median of
    # its interior, the voxels whose in-plane neighbours are all in the lesion; the 90th percentile where
    # it has fewer than 20 such voxels). Noise lifts the 90th percentile above a flat core
    pv_core: str = "p90"
    # a lesion's part beyond the marrow ground (marrow.edge_reach_mm) may be at most this fraction of
    # the lesion; otherwise that part is dropped: BME that reached the outer cortex is mostly marrow
    # still, while a bright vessel or nerve grazed by a speck of marrow is mostly outside it
    edge_max_share: float = 0.5


@dataclass(frozen=True)
class LesionSettings:
    min_lesion_ml: float = 0.05
    min_slices: int = 1
    # ASAS-style persistence: a lesion must span >= this many consecutive slices
    connectivity: int = 26
    # a lesion must have at least this much (mL) inside the marrow mask itself, not counting what it grew
    # into the reach (min_lesion_ml counts both): a structure beside the bone that a few marrow voxels
    # seeded is not BME. Above min_lesion_ml it is also the smallest lesion kept. 0 = off
    min_marrow_ml: float = 0.0
    # a lesion with more than this share of its voxels on the outermost slice at either end of the stack
    # is dropped: there the slice cuts the bone's surface tangentially, so nerves, vessels and muscle
    # lying on it are averaged with fat into marrow-like signal, and no slice beyond confirms them.
    # 1 = off
    stack_edge_max_share: float = 1.0


@dataclass(frozen=True)
class ScoringSettings:
    """How lesions are located and extent is scored (see :mod:`bmeseg.measure`, :mod:`bmeseg.regions`)."""

    # moaks | sparcc | ramris | fraction: which aggregate is the study's extent_score
    scheme: str = "moaks"
    # grade boundaries on the extent fraction of each bone/subregion
    grade_edges: tuple[float, ...] = (0.0, 0.33, 0.66)
    # a lesion reaching this far (mm) from the articular surface is "deep" (SPARCC: 1 cm)
    deep_mm: float = 10.0
    # marrow boundary within this distance (mm) of another bone's marrow faces a joint
    joint_gap_mm: float = 15.0
    # subregions cover marrow within this depth (mm) of the articular surface (0: whole bone)
    region_depth_mm: float = 0.0
    # imaged side (knee/hip/ankle) for medial/lateral when no fibula is seen: auto | left | right
    laterality: str = "auto"
    # SPARCC: number of consecutive (semicoronal) slices scored
    sparcc_slices: int = 6
    # DICOM SEG: one segment per "bone" with BME, or per "lesion"
    seg_segments: str = "bone"


@dataclass(frozen=True)
class PipelineSettings:
    name: str = "generic"
    anatomy: str = "generic"
    description: str = ""
    registration: RegistrationSettings = field(default_factory=RegistrationSettings)
    marrow: MarrowSettings = field(default_factory=MarrowSettings)
    edema: EdemaSettings = field(default_factory=EdemaSettings)
    lesions: LesionSettings = field(default_factory=LesionSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


_SECTIONS: dict[str, type] = {
    "registration": RegistrationSettings,
    "marrow": MarrowSettings,
    "edema": EdemaSettings,
    "lesions": LesionSettings,
    "scoring": ScoringSettings,
}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be an integer; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"'{key}' must be a number; got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string; got {value!r}")
        return value
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"'{key}' must be a list; got {value!r}")
        return tuple(_coerce(v, inner, key) for v in value)
    if origin in (typing.Union, types.UnionType):  # Optional[X]: TOML has no null, so X it is
        inner_types = [t for t in typing.get_args(tp) if t is not type(None)]
        return _coerce(value, inner_types[0], key)
    raise ConfigError(f"'{key}': unsupported setting type {tp!r}")  # pragma: no cover


def _build(cls: type, table: dict[str, Any], section: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"'[{section}]' must be a table; got {table!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(f"unknown setting '{section}.{key}'; valid keys: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"[{section}] {exc}") from None


def _validate(s: PipelineSettings) -> None:
    def check(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"'{key}' {msg}")

    check(s.anatomy in ANATOMIES, "pipeline.anatomy", f"must be one of {set(ANATOMIES)}; got {s.anatomy!r}")
    check(s.scoring.scheme in SCHEMES, "scoring.scheme", f"must be one of {set(SCHEMES)}; got {s.scoring.scheme!r}")
    m = s.marrow
    check(0 < m.t1_fat_level < 1, "marrow.t1_fat_level", "must be in (0, 1)")
    check(0 < m.stir_fat_level < 1, "marrow.stir_fat_level", "must be in (0, 1)")
    check(m.min_bone_ml > 0, "marrow.min_bone_ml", "must be > 0")
    check(m.closing_mm >= 0, "marrow.closing_mm", "must be >= 0")
    check(m.separation_mm >= 0, "marrow.separation_mm", "must be >= 0")
    check(0 < m.wall_tophat_level < 1, "marrow.wall_tophat_level", "must be in (0, 1)")
    check(0 < m.wall_stir_ratio < 1, "marrow.wall_stir_ratio", "must be in (0, 1)")
    check(0 <= m.wall_valley_t1_level <= 2, "marrow.wall_valley_t1_level", "must be in [0, 2]")
    check(m.wall_closing_mm >= 0, "marrow.wall_closing_mm", "must be >= 0")
    check(0 <= m.min_enclosed <= 1, "marrow.min_enclosed", "must be in [0, 1]")
    check(0 <= m.min_solidity <= 1, "marrow.min_solidity", "must be in [0, 1]")
    check(0 <= m.sure_enclosed <= 1, "marrow.sure_enclosed", "must be in [0, 1]")
    check(0 <= m.min_solidity_enclosed <= 1, "marrow.min_solidity_enclosed", "must be in [0, 1]")
    check(0 <= m.ray_enclosed <= 1, "marrow.ray_enclosed", "must be in [0, 1]")
    check(0 <= m.ray_solidity <= 1, "marrow.ray_solidity", "must be in [0, 1]")
    check(m.ray_mm > 0, "marrow.ray_mm", "must be > 0")
    check(m.hull_mm >= 0, "marrow.hull_mm", "must be >= 0")
    check(m.lesion_reach_mm >= 0, "marrow.lesion_reach_mm", "must be >= 0")
    check(m.reach_stir_muscle >= 0, "marrow.reach_stir_muscle", "must be >= 0")
    check(m.reach_t1_muscle >= 0, "marrow.reach_t1_muscle", "must be >= 0")
    check(0 <= m.reach_rays <= 1, "marrow.reach_rays", "must be in [0, 1]")
    check(0 <= m.reach_slices <= 3, "marrow.reach_slices", "must be 0 (off) to 3 slices")
    check(m.reach_slices_stir_muscle >= 0, "marrow.reach_slices_stir_muscle", "must be >= 0")
    check(m.split_neck_mm >= 0, "marrow.split_neck_mm", "must be >= 0")
    check(0 < m.enclosed_share <= 1, "marrow.enclosed_share", "must be in (0, 1]")
    check(0 < m.cortex_t1_level < 1, "marrow.cortex_t1_level", "must be in (0, 1)")
    check(m.cortex_search_mm > 0, "marrow.cortex_search_mm", "must be > 0")
    check(m.max_bones >= 1, "marrow.max_bones", "must be >= 1")
    check(m.search in SEARCHES, "marrow.search", f"must be one of {set(SEARCHES)}; got {m.search!r}")
    check(0 <= m.fat_shading_degree <= 3, "marrow.fat_shading_degree", "must be 0 (off), 1, 2 or 3")
    check(0 < m.fat_shading_level < 1, "marrow.fat_shading_level", "must be in (0, 1)")
    check(0 <= m.fat_shading_tolerance < 1, "marrow.fat_shading_tolerance", "must be in [0, 1)")
    check(m.bias_field in BIAS_FIELDS, "marrow.bias_field", f"must be one of {set(BIAS_FIELDS)}; got {m.bias_field!r}")
    check(m.body_shell_mm > 0, "marrow.body_shell_mm", "must be > 0")
    check(m.joint_min_ml > 0, "marrow.joint_min_ml", "must be > 0")
    check(m.band_mm > 0, "marrow.band_mm", "must be > 0")
    check(m.joint_sheets >= 1, "marrow.joint_sheets", "must be >= 1")
    check(m.fluid_stir_ratio > 1, "marrow.fluid_stir_ratio", "must be > 1")
    check(m.fluid_body_ml > 0, "marrow.fluid_body_ml", "must be > 0")
    check(m.fluid_body_margin_mm >= 0, "marrow.fluid_body_margin_mm", "must be >= 0")
    check(m.fluid_body_midline_mm >= 0, "marrow.fluid_body_midline_mm", "must be >= 0")
    check(0 < m.fluid_t1_level <= 2, "marrow.fluid_t1_level", "must be in (0, 2]")
    check(m.support_t1_low < m.support_t1_high, "marrow.support_t1_low", "must be below marrow.support_t1_high")
    check(m.support_open_mm >= 0, "marrow.support_open_mm", "must be >= 0")
    check(m.support_min_cm2 >= 0, "marrow.support_min_cm2", "must be >= 0")
    check(m.support_close_mm >= 0, "marrow.support_close_mm", "must be >= 0")
    check(m.edge_reach_mm >= 0, "marrow.edge_reach_mm", "must be >= 0")
    check(m.edge_stir_muscle_max > 0, "marrow.edge_stir_muscle_max", "must be > 0")
    check(0 < m.ground_fat_ring_max <= 1, "marrow.ground_fat_ring_max", "must be in (0, 1]")
    check(m.ground_fat_ring_mm > 0, "marrow.ground_fat_ring_mm", "must be > 0")
    check(m.edge_vessel_mm >= 0, "marrow.edge_vessel_mm", "must be >= 0")
    check(m.joint_close_mm >= 0, "marrow.joint_close_mm", "must be >= 0")
    check(m.joint_valley_mm >= 0, "marrow.joint_valley_mm", "must be >= 0")
    check(0 < m.joint_valley_depth < 1, "marrow.joint_valley_depth", "must be in (0, 1)")
    check(m.joint_valley_side_mm > 0, "marrow.joint_valley_side_mm", "must be > 0")
    check(m.joint_valley_min_mm >= 0, "marrow.joint_valley_min_mm", "must be >= 0")
    check(m.joint_valley_sheets >= 1, "marrow.joint_valley_sheets", "must be >= 1")
    check(m.sacrum_seed_mm > 0, "marrow.sacrum_seed_mm", "must be > 0")
    check(m.ilium_seed_mm > m.sacrum_seed_mm, "marrow.ilium_seed_mm", "must exceed marrow.sacrum_seed_mm")
    check(0 <= m.normal_t1_level < 1, "marrow.normal_t1_level", "must be in [0, 1)")
    e = s.edema
    check(e.stir_tukey_k >= 0, "edema.stir_tukey_k", "must be >= 0")
    check(e.stir_min_ratio >= 1, "edema.stir_min_ratio", "must be >= 1")
    check(0 < e.t1_max_ratio <= 2, "edema.t1_max_ratio", "must be in (0, 2]")
    check(e.reference_sigma_mm > 0, "edema.reference_sigma_mm", "must be > 0")
    check(e.reference_dark_k >= 0, "edema.reference_dark_k", "must be >= 0 (0: off)")
    check(0 < e.t1_muscle_level <= 1, "edema.t1_muscle_level", "must be in (0, 1]")
    check(e.stir_muscle_ratio >= 0, "edema.stir_muscle_ratio", "must be >= 0 (0 = off)")
    check(0 <= e.pv_fraction < 1, "edema.pv_fraction", "must be in [0, 1)")
    check(e.pv_core in ("p90", "interior"), "edema.pv_core", "must be 'p90' or 'interior'")
    check(0 <= e.edge_max_share <= 1, "edema.edge_max_share", "must be in [0, 1]")
    check(s.lesions.min_lesion_ml >= 0, "lesions.min_lesion_ml", "must be >= 0")
    check(s.lesions.min_slices >= 1, "lesions.min_slices", "must be >= 1")
    check(s.lesions.min_marrow_ml >= 0, "lesions.min_marrow_ml", "must be >= 0")
    check(0 <= s.lesions.stack_edge_max_share <= 1, "lesions.stack_edge_max_share", "must be in [0, 1] (1 = off)")
    check(s.lesions.connectivity in (6, 18, 26), "lesions.connectivity", "must be one of {6, 18, 26}")
    sc = s.scoring
    check(sc.deep_mm > 0, "scoring.deep_mm", "must be > 0")
    check(sc.joint_gap_mm > 0, "scoring.joint_gap_mm", "must be > 0")
    check(sc.region_depth_mm >= 0, "scoring.region_depth_mm", "must be >= 0")
    check(sc.laterality in ("auto", "left", "right"), "scoring.laterality",
          f"must be one of {{'auto', 'left', 'right'}}; got {sc.laterality!r}")
    check(sc.sparcc_slices >= 1, "scoring.sparcc_slices", "must be >= 1")
    check(sc.seg_segments in ("bone", "lesion"), "scoring.seg_segments",
          f"must be one of {{'bone', 'lesion'}}; got {sc.seg_segments!r}")
    edges = s.scoring.grade_edges
    check(len(edges) >= 1 and list(edges) == sorted(edges) and all(0 <= x < 1 for x in edges),
          "scoring.grade_edges", "must be increasing fractions in [0, 1)")


def pipelines_dir() -> Path:
    """Folder holding the anatomy presets.

    ``$BMESEG_PIPELINES`` if set, else ``pipelines/`` of the source checkout.
    """
    env = os.environ.get("BMESEG_PIPELINES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "pipelines"


def available_pipelines() -> list[str]:
    d = pipelines_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such settings file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def settings_from_dict(data: dict[str, Any], *, source: str = "settings") -> PipelineSettings:
    """Build validated settings from a nested dict (the TOML structure)."""
    allowed = {"pipeline", *_SECTIONS}
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{source}: unknown section '[{key}]'; valid sections: {', '.join(sorted(allowed))}")
    head = data.get("pipeline", {})
    for key in head:
        if key not in ("name", "anatomy", "description"):
            raise ConfigError(f"{source}: unknown setting 'pipeline.{key}'; valid keys: name, anatomy, description")
    try:
        kwargs: dict[str, Any] = {k: _coerce(v, str, f"pipeline.{k}") for k, v in head.items()}
        for section, cls in _SECTIONS.items():
            kwargs[section] = _build(cls, data.get(section, {}), section)
        s = PipelineSettings(**kwargs)
        _validate(s)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return s


def load_settings(
    pipeline: str | None = None, *, config: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> PipelineSettings:
    """Load a preset by name (or path) and overlay ``config`` and ``overrides``.

    Parameters
    ----------
    pipeline : str, optional
        Preset name in :func:`pipelines_dir` (``"knee"``, ``"sij"``...) or a path
        to a ``.toml`` file. ``None`` gives the built-in generic defaults.
    config : path, optional
        A user TOML file whose tables override the preset's.
    overrides : dict, optional
        Nested dict applied last (used by the Python API and tests).
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if pipeline is not None:
        p = Path(pipeline)
        if p.suffix != ".toml":
            p = pipelines_dir() / f"{pipeline}.toml"
            if not p.is_file():
                names = available_pipelines()
                raise ConfigError(
                    f"'pipeline' must be one of {set(names) if names else '{}'}; got {pipeline!r}"
                    + ("" if names else f" (no presets found in {pipelines_dir()}; set BMESEG_PIPELINES)")
                )
        data = _read_toml(p)
        source = str(p)
    if config is not None:
        data = _merge(data, _read_toml(Path(config)))
        source += f" + {config}"
    if overrides:
        data = _merge(data, overrides)
    return settings_from_dict(data, source=source)
