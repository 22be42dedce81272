"""Where the marrow is.

Without a bone mask, marrow is found from the two images together:

1. the body outline (signal on either image, holes filled per slice);
2. **fat-like** voxels: bright on T1 *and* dark on the fat-suppressed image. Thresholds
   sit between the scan's own reference levels (low and high percentiles inside the
   body), so they follow the scanner's arbitrary units (where the preset asks, ``fat_shading_degree``,
   the T1's coil shading measured on fat is lifted out for this test: :func:`bmeseg.bias.fat_shading`);
3. fat that touches the outer shell of the body is subcutaneous, not marrow; small or
   thin pieces (fat pads, chemical-shift rims) are dropped by size after a 1-voxel
   opening that cuts bridges through partial-volume voxels;
4. each remaining compact blob is one marrow cavity. It is closed (ball of
   ``closing_mm``) and hole-filled **bone by bone**, so lesions that darken T1 and
   brighten STIR inside the cavity, or bite into it from the subchondral plate, are
   included again without bridging the joint space between two bones.

This ``search = "cavity"`` method needs marrow that is fattier than anything but fat
(knee, ankle, hip in adults). Adult axial-skeleton marrow (sacrum, ilia, vertebrae) is
mixed: on T1 it is between muscle and fat and overlaps muscle in intensity, so the
``search = "periarticular"`` method (sij preset) uses bone *shape* instead:

0. where the preset asks (``bias_field = "n4"``), the T1's slow coil shading is divided out first
   (:mod:`bmeseg.bias`): otherwise muscle near the coil reaches the T1 of marrow and the fat level
   is inflated by the brightest fat;
1. reference tissue levels of the scan: muscle (the lower T1 mode well inside the
   body) and fat (the body's high T1 level);
2. the articular cortex and endplates: voxels well inside the body (not skin, not
   subcutaneous) dark on T1 (below ``cortex_t1_level`` x muscle) **and** on STIR (below
   muscle), in the ``joint_sheets`` largest 3-D connected sheets of at least ``joint_min_ml``: the SI joint lines and
   the lumbosacral disc-endplate complex, the strongest dark structures in the pelvis. Where the preset
   asks (``joint_valley_mm`` > 0), joint lines are also found as T1 *valleys* (a faint or inflamed line
   is darker than the marrow either side of it but not below the cortex level): darker than muscle and
   than an in-plane grey closing by ``joint_valley_depth``, marrow-like on both sides along left-right,
   away from the body's middle (sacral foramina);
3. the search region is the subchondral band within ``band_mm`` of those sheets, in
   plane (the readers' region in Hepburn et al. and the ASAS definition are subchondral). The
   sheets are first closed in-plane by ``joint_close_mm``, so the joint space between the two
   cortical lines of a joint (cartilage, a fluid line) belongs to the joint, not to the band;
4. fluid (STIR above ``fluid_stir_ratio`` x muscle and T1 below ``fluid_t1_level`` x muscle: CSF in the
   sacral canal, joint fluid, bladder) is cut out of the region (in both methods), and "normal" marrow is
   the part brighter on T1 than muscle (by ``normal_t1_level`` of the muscle-fat range);
5. where the preset asks (``support_close_mm`` > 0), the band keeps only marrow-like ground: T1 between
   muscle and fat, opened (muscle-fat rims), in-plane pieces of a bone's size, closed over lesions and
   hole-filled with the joint cortex as a wall (``support_joint_walls``: BME that replaced the marrow up to
   the articular plate lies between marrow and cortex). This takes discs, vessels, bowel and most muscle
   out of the band;
6. where the preset asks (``lesion_reach_mm`` > 0), the same marrow ground up to ``band_mm +
   lesion_reach_mm`` from the sacroiliac joint lines (not the lumbosacral endplates) is the ``reach``
   that a lesion seeded in the band may grow into: BME that runs deep from the joint.

With a bone mask or label map (``--bone-mask``), the marrow is that mask minus a
thin cortical rim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from ._morph import (
    ball,
    bbox_slices,
    close_ball,
    dilate_ball,
    edt,
    erode_ball,
    fill_holes_per_slice,
    in_plane_spacing,
    in_plane_structure,
    largest_components,
    open_ball,
    within_in_plane,
)
from .config import MarrowSettings
from .errors import InputError
from .volume import Volume

__all__ = ["MarrowResult", "absorb_lesions", "body_mask", "find_marrow", "ray_enclosure", "t1_coverage", "tissue_levels"]


@dataclass(frozen=True)
class MarrowResult:
    """Marrow on the fluid-sensitive grid.

    Attributes
    ----------
    bones : (I, J, K) int32
        0 outside marrow, 1..n one label per marrow cavity (bone), largest first.
    normal : (I, J, K) bool
        Fat-like ("normal") marrow inside ``bones``: the reference tissue for edema.
    levels : dict
        Reference intensities used (for the report): T1/STIR low and high levels, thresholds.
    reach : (I, J, K) bool or None
        Bone interior outside ``bones`` that a lesion found in the marrow may grow into, with
        lesion-like signal. Cavity search: where a lesion replaced the fat up to the plate, inside
        the in-plane convex hull of a marrow piece and its own cortex, where rays meet cortex, not on
        it. Periarticular search: the marrow ground deeper than the band from a sacroiliac joint
        line. None: lesions stay inside ``bones``.
    edge : (I, J, K) bool or None
        The part of ``reach`` beyond the marrow ground (``edge_reach_mm``, periarticular search): a
        lesion grows into it only where the BME rule itself holds, not down to hysteresis' lower margin.
    """

    bones: NDArray[np.int32]
    normal: NDArray[np.bool_]
    levels: dict[str, float]
    reach: NDArray[np.bool_] | None = None
    edge: NDArray[np.bool_] | None = None

    @property
    def mask(self) -> NDArray[np.bool_]:
        return self.bones > 0


def body_mask(t1: NDArray[np.floating], stir: NDArray[np.floating], *, fraction: float = 0.08) -> NDArray[np.bool_]:
    """Foreground of the body: either image above ``fraction`` of its 99th percentile,
    holes filled per slice, largest component kept."""
    t_hi = float(np.percentile(t1, 99.0))
    s_hi = float(np.percentile(stir, 99.0))
    fg = (t1 > fraction * t_hi) | (stir > fraction * s_hi)
    fg = ndi.binary_opening(fg, structure=np.ones((3, 3, 1), bool))
    # dark structures (cortex, tendons, air-filled gaps) can split the outline where they
    # reach the edge of the field of view; a closing seals those cracks before filling
    fg = ndi.binary_closing(fg, structure=np.ones((7, 7, 1), bool), border_value=1)
    fg = fill_holes_per_slice(fg)
    lab = largest_components(fg, n=1)
    return lab > 0


def tissue_levels(
    t1: NDArray[np.floating], stir: NDArray[np.floating], body: NDArray[np.bool_], spacing_mm: tuple[float, ...],
    *, shell_mm: float, cover: NDArray[np.bool_] | None = None,
) -> dict[str, float]:
    """Reference levels of the scan's own tissues (arbitrary scanner units).

    ``muscle_t1`` / ``muscle_stir``: medians over voxels well inside the body (``shell_mm``
    from the outline) whose T1 lies between the 10th and 30th percentile there (muscle is
    the commonest tissue darker than marrow and fat). ``fat_t1``: the body's 97th T1
    percentile (subcutaneous fat). Only voxels in ``cover`` (seen by both series) count.
    """
    seen = body if cover is None else body & cover
    inner = erode_ball(body, shell_mm, in_plane_spacing(spacing_mm)) & seen
    if inner.sum() < 100:
        inner = seen
    p10, p30 = np.percentile(t1[inner], [10.0, 30.0])
    mus = inner & (t1 >= p10) & (t1 <= p30)
    if not mus.any():
        mus = inner
    return {
        "muscle_t1": float(np.median(t1[mus])),
        "muscle_stir": float(np.median(stir[mus])),
        "fat_t1": float(np.percentile(t1[seen], 97.0)),
    }


def find_marrow(
    t1: Volume,
    stir: Volume,
    settings: MarrowSettings | None = None,
    *,
    bone_mask: Volume | None = None,
) -> MarrowResult:
    """Find marrow cavities on the fluid-sensitive grid.

    Parameters
    ----------
    t1 : Volume
        T1-weighted image **already resampled onto** ``stir``'s grid.
    stir : Volume
        Fat-suppressed fluid-sensitive image (the reference grid).
    settings : MarrowSettings, optional
        ``search`` selects the method: ``"cavity"`` (fatty marrow) or ``"periarticular"``
        (mixed marrow; subchondral band around the joint cortex).
    bone_mask : Volume, optional
        Integer label map or binary mask of bones on the same grid (e.g.
        TotalSegmentator output resampled with nearest neighbour). When given it
        replaces the automatic search; its labels become the bone labels.

    Returns
    -------
    MarrowResult
    """
    s = settings or MarrowSettings()
    if not t1.geometry.same_grid(stir.geometry, tol_mm=1e-2):
        raise InputError("find_marrow: T1 must be resampled onto the fluid-sensitive grid first")
    a = np.asarray(t1.array, dtype=np.float32)
    b = np.asarray(stir.array, dtype=np.float32)
    spacing = stir.geometry.spacing_mm
    vox_ml = stir.geometry.voxel_volume_ml

    body = body_mask(a, b)
    if not body.any():
        raise InputError("no body signal found in the images (all background?)")
    cover = t1_coverage(a)
    seen = body & cover
    if seen.sum() < 100:
        raise InputError("the T1 series does not overlap the body on the fluid-sensitive image")
    if s.bias_field != "none":
        from .bias import n4_field

        a = a / n4_field(a, seen, spacing)  # (zeros where the T1 does not reach stay zero)
    t_lo, t_hi = (float(v) for v in np.percentile(a[seen], [20.0, 97.0]))
    s_lo, s_hi = (float(v) for v in np.percentile(b[seen], [3.0, 97.0]))
    t_thr = t_lo + s.t1_fat_level * (t_hi - t_lo)
    s_thr = s_lo + s.stir_fat_level * (s_hi - s_lo)
    fat_t1, max_lift = a, 1.0
    if s.fat_shading_degree > 0:
        from .bias import fat_shading

        # the fat threshold sits between the scan's own levels, and the brightest fat (P97) lies by the
        # coil: on the coil's far side fat and yellow marrow fall under it. Fat there is lifted back
        # to within the tolerance of the scan's median fat level (never lowered)
        loose = seen & (a > t_lo + s.fat_shading_level * (t_hi - t_lo)) & (b < s_thr)
        shade = fat_shading(a, loose, spacing, degree=s.fat_shading_degree)
        lift = 1.0 / np.minimum(shade / (1.0 - s.fat_shading_tolerance), 1.0)
        fat_t1, max_lift = a * lift, float(np.percentile(lift[seen], 99.0))
    fat = body & (fat_t1 > t_thr) & (b < s_thr)
    levels = {"t1_low": t_lo, "t1_high": t_hi, "t1_fat_threshold": t_thr,
              # the 99th percentile of the factor the fat test lifted the T1 by (coil shading; 1 = none or off)
              "t1_fat_shading_lift": max_lift,
              "stir_low": s_lo, "stir_high": s_hi, "stir_fat_threshold": s_thr,
              # share of the body on the fluid-sensitive image that the T1 reaches: BME is judged only there
              "t1_body_coverage": float(seen.sum() / body.sum()),
              "t1_uncovered_body_ml": float((body & ~cover).sum() * vox_ml)}

    if bone_mask is not None and not bone_mask.geometry.same_grid(stir.geometry, tol_mm=1e-2):
        raise InputError("bone mask is not on the fluid-sensitive grid (resample it first)")
    if bone_mask is None or s.search == "periarticular":  # muscle and fat levels (a given fatty-marrow mask needs none)
        sa, sb = _smooth_in_plane(a, b, spacing)
        levels.update(tissue_levels(sa, sb, body, spacing, shell_mm=s.body_shell_mm, cover=cover))
    if bone_mask is not None:
        lab = np.asarray(bone_mask.array).astype(np.int32)
        if s.cortex_margin_mm > 0:
            inner = erode_ball(lab > 0, s.cortex_margin_mm, spacing)
            lab = np.where(inner, lab, 0).astype(np.int32)
        if s.search == "periarticular":
            normal = (lab > 0) & _normal_mixed(sa, sb, levels, s) & cover
        else:
            normal = fat & (lab > 0)
        return MarrowResult(lab, normal, levels)
    if s.search == "periarticular":
        # the in-plane index axis closest to the patient's left-right axis (LPS x)
        lr_axis = int(np.argmax(np.abs(stir.geometry.direction[0, :2])))
        return _periarticular(sa, sb, body, cover, spacing, vox_ml, s, levels, lr_axis=lr_axis)
    res = _cavities(a, b, sb, body, cover, fat, spacing, vox_ml, s, levels, t_lo, s_thr)
    # fluid inside the bone outline (sacral canal CSF, a cyst, effusion in a notch) is not marrow
    fluid = _fluid(sa, sb, levels, s, spacing)
    bones = np.where(fluid | ~cover, 0, res.bones).astype(np.int32)
    reach = None
    if res.reach is not None:
        # beyond the marrow only lesion-like signal: brighter than muscle on the fluid-sensitive image
        # (muscle, cartilage and tendon are not) and not fluid-dark on T1 (joint fluid, cysts)
        reach = (res.reach & ~fluid & cover & (sb > s.reach_stir_muscle * levels["muscle_stir"])
                 & (sa > s.reach_t1_muscle * levels["muscle_t1"]))
    return MarrowResult(bones, res.normal & (bones > 0), levels, reach)


def absorb_lesions(
    marrow: MarrowResult, lesions: NDArray[np.bool_], spacing: tuple[float, ...], reach_mm: float,
    slices: int = 0,
) -> MarrowResult:
    """``marrow`` with the lesion voxels that grew into ``marrow.reach`` (at most ``reach_mm`` in-plane
    from the marrow, or ``slices`` slices from it: ``reach_slices``) given to the nearest bone: they are
    marrow the fat-based search missed, and a bone's extent counts them."""
    extra = lesions & ~marrow.mask
    if marrow.reach is None or not extra.any():
        return marrow
    # the reach is in-plane, and across slices only as far as reach_slices (a slice with no marrow left)
    pad = [int(np.ceil(reach_mm / sp)) + 1 for sp in spacing[:2]] + [slices]
    box = bbox_slices(extra, pad)
    assert box is not None
    sub = marrow.bones[box]
    if not sub.any():
        return marrow
    idx = ndi.distance_transform_edt(sub == 0, sampling=spacing, return_distances=False, return_indices=True)
    bones = marrow.bones.copy()
    nearest = sub[tuple(idx)]
    bones[box] = np.where(extra[box], nearest, sub)
    return MarrowResult(bones, marrow.normal, marrow.levels, marrow.reach, marrow.edge)


def t1_coverage(t1: NDArray[np.floating]) -> NDArray[np.bool_]:
    """Voxels of the fluid-sensitive grid that the (resampled) T1 series covers.

    :func:`bmeseg.register.resample_to` writes exactly 0 where the T1 slab does not reach
    (a T1 in another plane, or a shorter slab, covers only part of the STIR field of view).
    Runs of exact zeros at least 3x3 voxels in-plane are "not seen"; isolated zeros of a
    noisy magnitude image are kept. Uncovered voxels are never marrow and never count in the
    scan's reference levels.
    """
    zero = np.asarray(t1) == 0
    if not zero.any():
        return np.ones(zero.shape, bool)
    return ~np.asarray(ndi.binary_opening(zero, structure=np.ones((3, 3, 1), bool)))


def _fluid(
    sa: NDArray[np.float32], sb: NDArray[np.float32], levels: dict[str, float], s: MarrowSettings,
    spacing: tuple[float, ...], x: NDArray[np.float64] | None = None,
) -> NDArray[np.bool_]:
    """Free fluid: dark on T1 (below ``fluid_t1_level`` x muscle) and fluid-bright on STIR (CSF,
    effusion, bladder), grown 1 mm; bodies of fluid of at least ``fluid_body_ml`` (the thecal sac,
    the bladder) grown ``fluid_body_margin_mm`` in-plane (the partial-volume rim, nerve roots and
    epidural veins around the CSF column are STIR-bright and T1-dark too). With ``x`` (signed mm from
    the body's left-right middle) and ``fluid_body_midline_mm``, only bodies whose median ``|x|`` is
    within that distance get the margin."""
    fluid = (sb > s.fluid_stir_ratio * levels["muscle_stir"]) & (sa < s.fluid_t1_level * levels["muscle_t1"])
    ips = in_plane_spacing(spacing)
    out = dilate_ball(fluid, 1.0, ips)
    if s.fluid_body_margin_mm > 0 and fluid.any():
        vox_ml = float(np.prod(spacing)) / 1000.0
        lab = largest_components(fluid, min_voxels=max(1, round(s.fluid_body_ml / vox_ml)))
        if x is not None and s.fluid_body_midline_mm > 0 and lab.any():
            n = int(lab.max())
            mid = np.asarray(ndi.median(np.abs(x), lab, np.arange(1, n + 1)), dtype=np.float64)
            keep = np.concatenate([[False], mid <= s.fluid_body_midline_mm])
            body = keep[lab]
        else:
            body = lab > 0
        if body.any():
            out |= dilate_ball(body, s.fluid_body_margin_mm, ips)
    return out


def _smooth_in_plane(
    a: NDArray[np.float32], b: NDArray[np.float32], spacing: tuple[float, ...], sigma_mm: float = 0.5,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Light in-plane Gaussian (noise and trabecular texture), none across thick slices."""
    sig = tuple(sigma_mm / sp if i < 2 else 0.0 for i, sp in enumerate(spacing))
    return ndi.gaussian_filter(a, sig), ndi.gaussian_filter(b, sig)


def _t1_level(tl: dict[str, float], fraction: float) -> float:
    """The T1 ``fraction`` of the way from muscle (0) to fat (1), from :func:`tissue_levels`' keys."""
    return tl["muscle_t1"] + fraction * (tl["fat_t1"] - tl["muscle_t1"])


def _normal_mixed(
    a: NDArray[np.float32], b: NDArray[np.float32], tl: dict[str, float], s: MarrowSettings,
) -> NDArray[np.bool_]:
    """Marrow-like voxels in mixed marrow: brighter than muscle on T1, not fluid-bright on STIR."""
    t_min = _t1_level(tl, s.normal_t1_level)
    return np.asarray((a > t_min) & (b < s.fluid_stir_ratio * tl["muscle_stir"]))


def _periarticular(
    sa: NDArray[np.float32], sb: NDArray[np.float32], body: NDArray[np.bool_], cover: NDArray[np.bool_],
    spacing: tuple[float, ...],
    vox_ml: float, s: MarrowSettings, levels: dict[str, float], *, lr_axis: int = 0,
) -> MarrowResult:
    """Subchondral band around the joint cortex (mixed marrow: sacroiliac joints, spine), from the
    lightly smoothed images ``sa``/``sb`` and the scan's ``levels`` (with :func:`tissue_levels`' keys).
    ``lr_axis`` is the in-plane index axis nearest the patient's left-right (``split_joint_sides``)."""
    ips = in_plane_spacing(spacing)
    inner = erode_ball(body, s.body_shell_mm, ips) & cover
    cortex = inner & (sa < s.cortex_t1_level * levels["muscle_t1"]) & (sb < levels["muscle_stir"])
    sheets = largest_components(cortex, n=s.joint_sheets, min_voxels=max(1, round(s.joint_min_ml / vox_ml)), connectivity=3) > 0
    x = _lr_offset_mm(body, spacing, lr_axis)  # signed mm from the body's left-right middle
    if s.joint_valley_mm > 0:
        sheets |= _valley_sheets(sa, x, inner, levels, spacing, vox_ml, s, lr_axis)
    levels["cortex_t1_threshold"] = s.cortex_t1_level * levels["muscle_t1"]
    levels["joint_cortex_ml"] = float(sheets.sum() * vox_ml)
    # in-plane distance only: a 3.3 mm slice must not carry the band into the next bone. No joint cortex,
    # no band (the pipeline says so in its warnings)
    near = within_in_plane(sheets, s.band_mm, spacing)
    joint = close_ball(sheets, s.joint_close_mm, ips) | sheets if s.joint_close_mm > 0 else sheets
    open_ground = body & ~joint & ~_fluid(sa, sb, levels, s, spacing, x) & cover
    ground = open_ground
    if s.support_close_mm > 0:
        ground = open_ground & _marrow_support(sa, sb, inner, levels, spacing, s,
                                               joint=joint if s.support_joint_walls else None)
    band = ground & near
    if s.support_close_mm > 0 and s.ground_fat_ring_max < 1:
        band &= ~_fat_ringed(band, sa, sb, cover, levels, spacing, s)
    bones = largest_components(band, n=s.max_bones, min_voxels=max(1, round(s.min_bone_ml / vox_ml)))
    del band
    reach = edge = None
    lesion_like = (sb > s.reach_stir_muscle * levels["muscle_stir"]) & (sa > s.reach_t1_muscle * levels["muscle_t1"])
    # the sacroiliac joint lines (from 2 x sacrum_seed_mm out, as the joint-side split counts them), not
    # the lumbosacral endplates
    lines = sheets & (np.abs(x) >= 2.0 * s.sacrum_seed_mm)
    if s.lesion_reach_mm > 0:
        # a lesion seeded in the band may run deeper into the same marrow ground (SPARCC "deep" BME),
        # lesion-like signal only, as in the cavity search's reach. Only from the sacroiliac joint lines
        reach = (ground & ~(bones > 0) & within_in_plane(lines, s.band_mm + s.lesion_reach_mm, spacing)
                 & lesion_like)
    if s.edge_reach_mm > 0 and s.support_close_mm > 0:
        # BME that replaced the marrow up to the bone's outer cortex: off the marrow ground, but within
        # edge_reach_mm of it and near a joint line. Nerves and veins beside the bone are brighter, and
        # their partial-volume rims are kept out with them (in place: a few masks of the volume's size)
        edge = within_in_plane(ground, s.edge_reach_mm, spacing)
        edge &= open_ground
        edge &= ~ground
        edge &= lesion_like
        edge &= within_in_plane(lines, s.band_mm + s.edge_reach_mm, spacing)
        bright = sb >= s.edge_stir_muscle_max * levels["muscle_stir"]
        edge &= ~bright
        if s.edge_vessel_mm > 0:
            bright &= ~ground
            edge &= ~within_in_plane(bright, s.edge_vessel_mm, spacing)
        del bright
        reach = edge if reach is None else reach | edge
    del open_ground, lesion_like
    if s.split_joint_sides:
        bones = _split_joint_sides(bones, sa, x, sheets, spacing, lr_axis, s.sacrum_seed_mm, s.ilium_seed_mm,
                                   near_mm=s.band_mm)
    normal = (bones > 0) & _normal_mixed(sa, sb, levels, s)
    return MarrowResult(bones, normal, levels, reach, edge)


def _fat_ringed(
    band: NDArray[np.bool_], sa: NDArray[np.float32], sb: NDArray[np.float32], cover: NDArray[np.bool_],
    tl: dict[str, float], spacing: tuple[float, ...], s: MarrowSettings,
) -> NDArray[np.bool_]:
    """The in-plane pieces of ``band`` whose outer ring (``ground_fat_ring_mm`` in-plane, where the T1
    reaches) is at least ``ground_fat_ring_max`` fat: T1 above ``support_t1_high`` of the muscle-to-fat
    range and STIR below muscle (suppressed fat).

    Marrow lies inside its cortex, dark on both images. A bowel loop in front of the sacrum has the
    marrow's T1 and the gas in it passes for joint cortex, so it can become marrow ground; but it lies
    in mesenteric fat. (A nerve root in its fat sheath is caught only as a piece of its own: one that
    touches a bone joins that bone's piece.) A ring voxel between two pieces counts for the higher
    label only (one grey dilation for all pieces)."""
    lab, n = ndi.label(band, structure=in_plane_structure())
    if n == 0:
        return np.zeros_like(band)
    grown = ndi.grey_dilation(lab, footprint=_in_plane_disk(s.ground_fat_ring_mm, spacing))
    ring = (lab == 0) & (grown > 0) & cover
    t_fat = _t1_level(tl, s.support_t1_high)
    fat = ring & (sa > t_fat) & (sb < tl["muscle_stir"])
    share = np.bincount(grown[fat], minlength=n + 1) / np.maximum(np.bincount(grown[ring], minlength=n + 1), 1)
    drop = share >= s.ground_fat_ring_max
    drop[0] = False
    return np.asarray(drop[lab])


def _split_joint_sides(
    bones: NDArray[np.int32], t1: NDArray[np.float32], x: NDArray[np.float64], sheets: NDArray[np.bool_],
    spacing: tuple[float, ...], lr_axis: int, sacrum_mm: float, ilium_mm: float, *, side_mm: float = 2.0,
    near_mm: float = 10.0,
) -> NDArray[np.int32]:
    """Relabel a sacroiliac band as sacrum (1), the ilium on the +index side (2) and on the -index side
    (3), plus any piece none of them reaches (4...).

    Where a joint line is faint the band runs across it, and one component then holds the sacral and
    the iliac side of that joint (named by its centroid, its lesions get the wrong bone and quadrant).
    A marker watershed on the T1 (dark cortex and joint space are ridges) grows the sacrum from the band
    within ``sacrum_mm`` of the body's left-right middle and each ilium from the band beyond ``ilium_mm``
    on its side, so the three meet on the joint lines. Where the band is only a strip either side of a
    joint line (``sheets`` between ``sacrum_mm`` and ``ilium_mm`` from the middle), the strip within
    ``near_mm`` of a line and more than ``side_mm`` medial of its nearest line voxel seeds the sacrum,
    the strip lateral of it the ilium: the middle of the sacrum is often outside the band, and a flood
    from it would come too late. Without all three seeds the labels are kept. ``x`` is the signed
    distance (mm) from the body's left-right middle (:func:`_lr_offset_mm`)."""
    from skimage.segmentation import watershed

    m = bones > 0
    if not m.any():
        return bones
    markers = np.zeros(bones.shape, np.int32)
    markers[m & (np.abs(x) <= sacrum_mm)] = 1
    markers[m & (x >= ilium_mm)] = 2
    markers[m & (x <= -ilium_mm)] = 3
    # a joint line has the band on both sides along left-right (the outer cortex of an ilium has muscle
    # lateral of it; sacral foramina lie within 2 x sacrum_mm of the middle)
    both = _on_both_sides(m, max(1, round(near_mm / spacing[lr_axis])), lr_axis)
    zone = sheets & both & (np.abs(x) >= 2.0 * sacrum_mm) & (np.abs(x) <= ilium_mm)
    ips = spacing[:2]
    for k in np.flatnonzero(zone.any(axis=(0, 1))):
        dist, idx = ndi.distance_transform_edt(~zone[:, :, k], sampling=ips, return_indices=True)
        xv = x[:, :, k]
        reach = np.abs(xv[idx[0], idx[1]])  # how far from the middle the nearest joint line is
        free = m[:, :, k] & (markers[:, :, k] == 0) & (dist <= near_mm)
        mk = markers[:, :, k]
        mk[free & (np.abs(xv) <= reach - side_mm)] = 1
        lateral = free & (np.abs(xv) >= reach + side_mm)
        mk[lateral & (xv > 0)] = 2
        mk[lateral & (xv < 0)] = 3
    if not all((markers == k).any() for k in (1, 2, 3)):
        return bones
    out = watershed(-t1, markers, mask=m).astype(np.int32)
    # pieces no seed reaches (not connected to any) keep a label of their own
    rest, _ = ndi.label(m & (out == 0))
    out[rest > 0] = rest[rest > 0] + 3
    return out


def _lr_offset_mm(body: NDArray[np.bool_], spacing: tuple[float, ...], lr_axis: int) -> NDArray[np.float64]:
    """Signed distance (mm) along ``lr_axis`` from the body's left-right middle (the mean index of its
    profile), broadcast to the volume's shape."""
    shape = [1, 1, 1]
    shape[lr_axis] = -1
    coord = np.arange(body.shape[lr_axis], dtype=np.float64).reshape(shape)
    prof = body.sum(axis=tuple(a for a in range(3) if a != lr_axis), dtype=np.float64)
    mid = float(np.dot(np.arange(prof.size), prof) / max(prof.sum(), 1.0))
    return np.broadcast_to((coord - mid) * spacing[lr_axis], body.shape)


def _on_both_sides(m: NDArray[np.bool_], steps: int, lr_axis: int) -> NDArray[np.bool_]:
    """Voxels with ``m`` within ``steps`` voxels along ``lr_axis`` on the + side **and** on the - side."""
    toward_plus = np.zeros_like(m)
    toward_minus = np.zeros_like(m)
    n_lr = m.shape[lr_axis]
    for d in range(1, min(steps, n_lr - 1) + 1):
        src = [slice(None)] * 3
        dst = [slice(None)] * 3
        src[lr_axis], dst[lr_axis] = slice(d, None), slice(None, n_lr - d)
        toward_plus[tuple(dst)] |= m[tuple(src)]
        toward_minus[tuple(src)] |= m[tuple(dst)]
    return toward_plus & toward_minus


def _mixed_marrow_t1(
    sa: NDArray[np.float32], inner: NDArray[np.bool_], tl: dict[str, float], s: MarrowSettings,
) -> NDArray[np.bool_]:
    """``inner`` voxels whose T1 lies between ``support_t1_low`` and ``support_t1_high`` of the
    muscle-to-fat range (mixed marrow; muscle ~0, fat ~1)."""
    u = (sa - tl["muscle_t1"]) / max(tl["fat_t1"] - tl["muscle_t1"], 1e-6)
    return np.asarray(inner & (u > s.support_t1_low) & (u < s.support_t1_high))


def _in_plane_disk(radius_mm: float, spacing: tuple[float, ...]) -> NDArray[np.bool_]:
    """(2 r0 + 1, 2 r1 + 1, 1) elliptical footprint of ``radius_mm`` in-plane, a radius of at least one voxel
    each way (whole voxels per axis: a 3 mm radius is 5 voxels at 0.6 mm, 3 at 1.09 mm)."""
    r = [max(1, round(radius_mm / sp)) for sp in spacing[:2]]
    g0, g1 = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1]
    return ((g0 / r[0]) ** 2 + (g1 / r[1]) ** 2 <= 1.0)[:, :, None]


def _valley_sheets(
    sa: NDArray[np.float32], x: NDArray[np.float64], inner: NDArray[np.bool_], tl: dict[str, float],
    spacing: tuple[float, ...], vox_ml: float, s: MarrowSettings, lr_axis: int,
) -> NDArray[np.bool_]:
    """Joint lines found as T1 valleys (``joint_valley_*`` settings): darker than muscle and than the
    marrow either side of them by ``joint_valley_depth`` of an in-plane grey closing, with marrow-like
    T1 on both sides along left-right, away from the body's middle (``x``: signed mm from it)."""
    closed = ndi.grey_closing(sa, footprint=_in_plane_disk(s.joint_valley_mm, spacing))
    valley = (closed - sa) > s.joint_valley_depth * np.maximum(closed, 1e-6)
    like = _mixed_marrow_t1(sa, inner, tl, s)
    side = _on_both_sides(like, max(1, round(s.joint_valley_side_mm / spacing[lr_axis])), lr_axis)
    cand = (inner & valley & (sa < tl["muscle_t1"]) & side
            & (np.abs(x) >= s.joint_valley_min_mm))
    return largest_components(cand, n=s.joint_valley_sheets, min_voxels=max(1, round(s.joint_min_ml / vox_ml)),
                              connectivity=3) > 0


def _marrow_support(
    sa: NDArray[np.float32], sb: NDArray[np.float32], inner: NDArray[np.bool_], tl: dict[str, float],
    spacing: tuple[float, ...], s: MarrowSettings, *, joint: NDArray[np.bool_] | None = None,
) -> NDArray[np.bool_]:
    """Where the ground is marrow: mixed-marrow T1 (between muscle and fat), closed over lesions.

    The subchondral band also crosses muscle, discs, vessels and bowel near the joints. On T1
    mixed marrow sits between muscle and fat; the rims where muscle meets fat do too, but they are
    thin, so an in-plane opening removes them, and in-plane pieces smaller than a bone's cross-section
    are dropped. A closing and per-slice hole filling then take back what a lesion or subchondral
    sclerosis darkened inside the bone.

    ``joint`` (the joint cortex, closed over the joint space) is the bone's wall where the marrow
    meets the joint: the hole filling counts it as an edge, so BME that replaced the marrow fat from
    the subchondral plate inwards, enclosed by marrow on one side and by the articular cortex on the
    other, is bone too. The joint itself never is.
    """
    ips = in_plane_spacing(spacing)
    like = _mixed_marrow_t1(sa, inner, tl, s) & (sb < s.fluid_stir_ratio * tl["muscle_stir"])
    if s.support_open_mm > 0:
        like = open_ball(like, s.support_open_mm, ips)
    lab, n = ndi.label(like, structure=in_plane_structure())  # in-plane pieces, slice by slice
    if n:
        area = np.bincount(lab.ravel(), minlength=n + 1) * (spacing[0] * spacing[1] / 100.0)
        ok = area >= s.support_min_cm2
        ok[0] = False
        like = ok[lab]
    support = close_ball(like, s.support_close_mm, ips) | like
    if joint is None:
        return fill_holes_per_slice(support) & inner
    return (fill_holes_per_slice(support | joint) & ~joint & inner) | (support & inner)


def _solidity(labels: NDArray[np.int32], n: int) -> NDArray[np.float64]:
    """Area-weighted mean in-plane solidity (area / convex-hull area) of each label, per slice."""
    from skimage.measure import regionprops

    num = np.zeros(n + 1)
    den = np.zeros(n + 1)
    for k in range(labels.shape[2]):
        for rp in regionprops(labels[:, :, k]):
            num[rp.label] += rp.area * rp.solidity
            den[rp.label] += rp.area
    return num / np.maximum(den, 1)


class _Pieces(NamedTuple):
    """Per fat piece (index = label, 0 = background): the cavity verdict and the figures behind it."""

    ok: NDArray[np.bool_]
    size: NDArray[np.intp]  # voxels
    enclosed: NDArray[np.float64]  # fraction enclosed by the flood fill
    solidity: NDArray[np.float64]


def _cavity_pieces(
    pieces: NDArray[np.int32], n: int, enclosed: NDArray[np.bool_], rays: NDArray[np.floating], min_vox: int,
    s: MarrowSettings,
) -> _Pieces:
    """Which fat pieces (labels ``0..n``) are marrow cavities: enclosed by cortex (flood fill or rays)
    and convex. Marrow cross-sections are convex (a bone's outline); fat pads and the fat between
    bones and tendons fill the concave spaces between convex bones."""
    size = np.bincount(pieces.ravel(), minlength=n + 1)
    enc_frac = np.bincount(pieces[enclosed], minlength=n + 1) / np.maximum(size, 1)
    sol = _solidity(pieces, n)
    ray_frac = np.bincount(pieces.ravel(), weights=rays.ravel(), minlength=n + 1) / np.maximum(size, 1)
    ok = (size >= min_vox) & (
        ((enc_frac >= s.min_enclosed) & (
            (sol >= s.min_solidity) | ((enc_frac >= s.sure_enclosed) & (sol >= s.min_solidity_enclosed))))
        | ((ray_frac >= s.ray_enclosed) & (sol >= s.ray_solidity)))
    ok[0] = False
    return _Pieces(np.asarray(ok), size, enc_frac, sol)


def _lesion_reach(
    bones: NDArray[np.int32], wall: NDArray[np.bool_], spacing: tuple[float, ...], reach_mm: float,
    touch_mm: float,
) -> NDArray[np.bool_]:
    """Bone interior beyond the marrow mask, slice by slice: the convex hull of each in-plane piece of
    marrow together with its own cortex, within ``reach_mm`` of the marrow, off the wall. Its own
    cortex: the wall arcs within ``touch_mm`` of the piece, after the wall is split between bones
    where it is equally far from two (a dark line across a joint joins two cortices). A lesion that
    replaced the fat up to the plate lies there; the next bone and most of the joint space do not."""
    from skimage.morphology import convex_hull_image

    ips = spacing[:2]
    eight = np.ones((3, 3), bool)
    touch_se = ball(touch_mm, ips)
    reach_px = [n // 2 + 1 for n in touch_se.shape]
    out = np.zeros(bones.shape, bool)
    for k in np.flatnonzero(bones.any(axis=(0, 1))):
        bones2 = bones[:, :, k]
        m2 = bones2 > 0
        pieces, _ = ndi.label(m2, structure=eight)
        dist, idx = ndi.distance_transform_edt(~m2, sampling=ips, return_indices=True)
        near = dist <= reach_mm
        # the cortex between two bones is split where it is equally far from both
        nearest_bone = bones2[idx[0], idx[1]]
        hull = np.zeros_like(m2)
        boxes = ndi.find_objects(pieces)
        for b in np.unique(bones2[m2]):
            arcs, n_arcs = ndi.label(wall[:, :, k] & (nearest_bone == b) & near, structure=eight)
            for i in np.unique(pieces[bones2 == b]):
                # the piece's box grown by the touching distance holds every arc voxel it touches
                pb = boxes[i - 1]
                assert pb is not None
                box = tuple(slice(max(sl.start - r, 0), sl.stop + r) for sl, r in zip(pb, reach_px, strict=True))
                own = np.zeros(n_arcs + 1, bool)
                sub = arcs[box]
                own[sub[ndi.binary_dilation(pieces[box] == i, structure=touch_se) & (sub > 0)]] = True
                own[0] = False
                part = (pieces == i) | own[arcs]
                pbox = bbox_slices(part)
                assert pbox is not None
                hull[pbox] |= convex_hull_image(part[pbox])
        out[:, :, k] = hull & near & ~m2 & ~wall[:, :, k]
    return out


def _split_necks(
    pieces: NDArray[np.int32], which: NDArray[np.intp], n: int, neck_mm: float, spacing: tuple[float, ...],
) -> tuple[NDArray[np.int32], int]:
    """Split each piece in ``which`` at its necks: parts thicker than ``neck_mm`` (distance to the
    piece's edge) seed a watershed of the distance map inside the piece. A marrow cavity joined to
    the fat beside it through a gap in the cortex becomes a convex cavity plus the fat, which the
    cavity tests then judge apart. Returns the new labels and the new label count."""
    from skimage.segmentation import watershed

    out = pieces.copy()
    nxt = n
    for i in which:
        box = bbox_slices(pieces == i, (1, 1, 1))
        if box is None:
            continue
        m = pieces[box] == i
        d = edt(m, spacing)
        seeds, k = ndi.label(d > neck_mm, structure=ndi.generate_binary_structure(3, 1))
        if k < 2:
            continue
        parts = watershed(-d, seeds, mask=m)
        sub = out[box]
        for j in range(2, k + 1):
            nxt += 1
            sub[parts == j] = nxt
    return out, nxt


def _hull_per_slice(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """In-plane convex hull of ``mask`` in every slice (a bone's cross-section is convex, so a lesion
    that bites into the fatty marrow from the subchondral plate lies inside its slice's hull)."""
    from skimage.morphology import convex_hull_image

    out = np.zeros_like(mask)
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        out[:, :, k] = convex_hull_image(mask[:, :, k])
    return out


def _next_event(ev: NDArray[np.int8]) -> tuple[NDArray[np.int8], NDArray[np.signedinteger]]:
    """Type and distance (steps) of the first event strictly after each index along axis 0 (type 0: none)."""
    n = ev.shape[0]
    dt = np.int16 if n < 32000 else np.int32
    pos = np.arange(n, dtype=dt).reshape((n,) + (1,) * (ev.ndim - 1))
    idx = np.where(ev > 0, pos, dt(n))
    nxt = np.minimum.accumulate(idx[::-1], axis=0)[::-1]
    nxt = np.concatenate([nxt[1:], np.full((1, *ev.shape[1:]), n, dt)], axis=0)
    typ = np.take_along_axis(np.concatenate([ev, np.zeros((1, *ev.shape[1:]), np.int8)], axis=0), nxt, axis=0)
    return typ, nxt - pos


def ray_enclosure(
    wall: NDArray[np.bool_], outside: NDArray[np.bool_], spacing: tuple[float, ...], *, max_mm: float,
) -> NDArray[np.float32]:
    """Per voxel, the fraction of 8 in-plane rays (axes and diagonals) whose first event is a wall
    within ``max_mm``, among the rays that meet a wall or the outside at all.

    Unlike a flood fill from the outside, one gap in a cortex only opens the few rays through it.
    Rays that leave the field of view meeting nothing do not count either way; a voxel no ray
    decides scores 0. Rays are in-plane, so slices are worked on in chunks of about 1 M voxels:
    the temporaries stay small whatever the matrix.
    """
    out = np.empty(wall.shape, np.float32)
    per_slice = max(1, int(wall.shape[0]) * int(wall.shape[1]))
    step_k = max(1, 1_000_000 // per_slice)
    for k0 in range(0, int(wall.shape[2]), step_k):
        sl = np.s_[:, :, k0:k0 + step_k]
        out[sl] = _ray_enclosure_chunk(wall[sl], outside[sl], spacing, max_mm)
    return out


def _ray_enclosure_chunk(
    wall: NDArray[np.bool_], outside: NDArray[np.bool_], spacing: tuple[float, ...], max_mm: float,
) -> NDArray[np.float32]:
    ev = np.zeros(wall.shape, np.int8)
    ev[outside] = 2
    ev[wall] = 1
    n_i, n_j = (int(x) for x in np.shape(wall)[:2])
    hits = np.zeros(wall.shape, np.int8)
    decided = np.zeros(wall.shape, np.int8)

    def count(typ: NDArray[np.int8], dist: NDArray[np.signedinteger], step_mm: float) -> None:
        hits[...] += (typ == 1) & (dist * step_mm <= max_mm)
        decided[...] += typ > 0

    for axis, step in ((0, spacing[0]), (1, spacing[1])):
        e = np.moveaxis(ev, axis, 0)
        for flip in (False, True):
            t, d = _next_event(e[::-1] if flip else e)
            if flip:
                t, d = t[::-1], d[::-1]
            count(np.moveaxis(t, 0, axis), np.moveaxis(d, 0, axis), step)
    # diagonals: shear so that each diagonal becomes a column (cells outside the image are empty)
    ii = np.broadcast_to(np.arange(n_i)[:, None], (n_i, n_j))
    jj = np.broadcast_to(np.arange(n_j)[None, :], (n_i, n_j))
    step = float(np.hypot(spacing[0], spacing[1]))
    for sign in (1, -1):
        col = jj - sign * ii + (n_i if sign == 1 else 0)
        sheared = np.zeros((n_i, n_i + n_j + 1, *ev.shape[2:]), np.int8)
        sheared[ii, col] = ev
        for flip in (False, True):
            t, d = _next_event(sheared[::-1] if flip else sheared)
            if flip:
                t, d = t[::-1], d[::-1]
            count(t[ii, col], d[ii, col], step)
    return np.asarray(hits / np.maximum(decided, 1), dtype=np.float32)


def _close_walls(cortex: NDArray[np.bool_], radius_mm: float, spacing: tuple[float, ...]) -> NDArray[np.bool_]:
    """Binary closing that seals small gaps in the cortex, also at the edge of the field of view.

    The array is edge-padded first: a wall that reaches the border continues straight out of
    it, so a bone shaft leaving the image keeps its cortex up to the last row (a plain closing
    erodes walls next to the border and would let the outside in along the edge).
    """
    pad = [(n // 2, n // 2) for n in ball(radius_mm, spacing).shape]
    big = np.pad(cortex, pad, mode="edge")
    closed = close_ball(big, radius_mm, spacing)
    return np.asarray(closed[tuple(slice(p, p + n) for (p, _), n in zip(pad, cortex.shape, strict=True))]) | cortex


def _cortex_walls(
    a: NDArray[np.float32], b: NDArray[np.float32], sb: NDArray[np.float32], body: NDArray[np.bool_],
    cover: NDArray[np.bool_], fat: NDArray[np.bool_], spacing: tuple[float, ...], s: MarrowSettings,
    levels: dict[str, float], t_lo: float, s_thr: float,
) -> NDArray[np.bool_]:
    """The cavities' walls: cortex, its small gaps sealed (``wall_closing_mm``).

    Cortex is below the STIR fat-like level and either a T1 line (darker than ``cortex_t1_level`` x
    the low T1 level ``t_lo``, or a black top-hat) or a STIR valley (below ``wall_stir_ratio`` x its
    7-voxel in-plane neighbourhood) that is darker than suppressed fat too, or (``wall_valley_t1_level``)
    lies where the T1 is below that fraction of ``t_lo``. Records ``fat_stir`` and
    ``cortex_t1_threshold`` in ``levels``.
    """
    t_hi = levels["t1_high"]
    tophat = ndi.grey_closing(a, size=(7, 7, 1)) - a
    t1_line = cover & ((a < s.cortex_t1_level * t_lo) | (tophat > s.wall_tophat_level * (t_hi - t_lo)))
    # the STIR shows the cortex too, as a line darker than the suppressed fat and marrow on both
    # sides; it is the only evidence where the T1 slab does not reach, and where a T1 acquired in
    # another plane blurs the cortex over its thick slices
    # (darker than suppressed fat itself, and a valley narrower than 7 voxels: not a fat-muscle edge;
    # ``sb`` is the STIR lightly smoothed in-plane, 0.5 mm, by find_marrow)
    fat_stir = float(np.median(b[fat])) if fat.any() else s_thr
    levels["fat_stir"] = fat_stir
    levels["cortex_t1_threshold"] = s.cortex_t1_level * t_lo
    valley = sb < s.wall_stir_ratio * ndi.grey_closing(sb, size=(7, 7, 1))
    stir_line = (sb < s.wall_stir_ratio * fat_stir) & valley
    if s.wall_valley_t1_level > 0:
        # a STIR valley that is dark on T1 as well is cortex, however dark the suppressed fat: the plate
        # under a lesion has no bright side on T1 for the top-hat, and on PD-FS it is no darker than
        # the fat (phantom cortex 34, fat 51, noise 17), so the bone was open there
        stir_line |= cover & (a < s.wall_valley_t1_level * t_lo) & valley
    cortex = body & (b < s_thr) & (t1_line | stir_line)
    return _close_walls(cortex, s.wall_closing_mm, spacing)


def _cavities(
    a: NDArray[np.float32], b: NDArray[np.float32], sb: NDArray[np.float32], body: NDArray[np.bool_],
    cover: NDArray[np.bool_],
    fat: NDArray[np.bool_],
    spacing: tuple[float, ...], vox_ml: float, s: MarrowSettings, levels: dict[str, float],
    t_lo: float, s_thr: float,
) -> MarrowResult:
    """Fatty-marrow cavities inside their own cortex (knee, ankle, hip).

    Yellow marrow has the signal of fat, so only the cortex tells the femoral marrow from
    the fat around it. Work is done slice by slice in the acquisition plane (thick slices
    graze the cortex at the ends of a bone and would connect marrow and fat in 3-D):

    * walls = cortex (:func:`_cortex_walls`): dark on STIR and on T1 either absolutely (below
      ``cortex_t1_level`` x the body's low T1 level) or relative to its neighbourhood (a black
      top-hat deeper than ``wall_tophat_level`` of the muscle-to-fat range: thin, partial-volumed
      cortex), or a dark STIR valley that is darker than suppressed fat or lies where the T1 is
      muscle-dark;
    * enclosed = what cannot be reached in-plane from outside the body or from its
      subcutaneous shell without crossing a wall (the field-of-view edge is not "outside",
      so a shaft that leaves the image stays enclosed);
    * fat pieces touching the shell in their slice are subcutaneous; the rest are joined
      in 3-D, and a piece is a marrow cavity when at least ``min_enclosed`` of it is enclosed;
    * each cavity takes the enclosed regions it shares a slice region with, which brings
      back lesions that replaced the fat up to the subchondral plate, then is closed and
      hole-filled bone by bone. Pieces split by a thin dark line (physeal scar) are merged;
    * (``split_neck_mm``) a piece that is not convex is first split at its necks and its parts
      judged again (a rejected piece's parts only when surely enclosed and convex), so a cavity
      joined through a cortex gap to the fat beside it keeps only its convex part;
    * (``lesion_reach_mm``) the returned ``reach`` is the bone interior the fat missed: each
      marrow piece's in-plane convex hull with its own cortex, where at least ``reach_rays`` of
      the rays meet cortex (0: the hull and its own cortex alone bound it); with ``reach_slices``
      also the bone's footprint on the neighbouring slices, where rays call it enclosed and the STIR
      is lesion-bright.
    """
    in_plane = in_plane_structure()
    shell = body & ~erode_ball(body, s.body_shell_mm, spacing, border_value=1)

    wall = _cortex_walls(a, b, sb, body, cover, fat, spacing, s, levels, t_lo, s_thr)
    from_outside = ((~body) | shell) & ~wall  # where the outside starts: the flood fill's and the rays' seeds
    outside = ndi.binary_propagation(from_outside, structure=in_plane, mask=~wall)
    enclosed = body & ~outside & ~wall & cover

    fat_open = (open_ball(fat & ~wall, s.separation_mm, spacing) if s.separation_mm > 0
                else ndi.binary_opening(fat & ~wall, structure=ndi.generate_binary_structure(3, 1)))
    lab2, _ = ndi.label(fat_open, structure=in_plane)
    # fat reaching the skin's shell in its slice, or the edge of the T1 slab (beyond which the skin
    # cannot be seen), is subcutaneous; only its enclosed part can be marrow bridged to it by
    # partial volume through a thin cortex
    edge = shell | (ndi.binary_dilation(body & ~cover, structure=in_plane) & cover)
    touching = np.unique(lab2[edge & (lab2 > 0)])
    fat_open &= ~np.isin(lab2, touching[touching > 0])
    min_vox = max(1, round(s.min_bone_ml / vox_ml))
    pieces, n = ndi.label(fat_open, structure=ndi.generate_binary_structure(3, 1))
    rays = ray_enclosure(wall, from_outside, spacing, max_mm=s.ray_mm)
    if n:
        judged = _cavity_pieces(pieces, n, enclosed, rays, min_vox, s)
        ok = judged.ok
        if s.split_neck_mm > 0:
            # a piece that is not convex may be a cavity joined to the fat beside it through a gap in
            # the cortex: split it at its necks and judge the parts again. Parts of an accepted piece
            # pass the usual tests; parts of a rejected one must be surely enclosed and convex
            which = np.flatnonzero((judged.solidity < s.min_solidity) & (judged.size >= min_vox))
            if which.size:
                split, n2 = _split_necks(pieces, which, n, s.split_neck_mm, spacing)
                if n2 > n:
                    src = np.arange(n2 + 1)
                    src[split.ravel()] = pieces.ravel()  # the piece each new label came from
                    was = ok[src]
                    pieces, n = split, n2
                    judged = _cavity_pieces(pieces, n, enclosed, rays, min_vox, s)
                    sure = (judged.enclosed >= s.sure_enclosed) & (judged.solidity >= s.min_solidity)
                    ok = judged.ok & (was | sure)
        cav = ok[pieces]
    else:
        cav = np.zeros(a.shape, bool)
    # merge pieces separated only by a thin line (physeal scar): their 1 mm dilations touch
    grouped = dilate_ball(cav, 1.0, spacing) if cav.any() else cav
    comps = largest_components(grouped, n=s.max_bones, min_voxels=min_vox) * cav

    enc_lab, n_enc = ndi.label(enclosed, structure=in_plane)
    enc_size = np.bincount(enc_lab.ravel(), minlength=n_enc + 1)
    bones = np.zeros(a.shape, np.int32)
    se = ball(s.closing_mm, spacing)
    pad = tuple(int(x) + 2 for x in np.array(se.shape) // 2)
    for label in range(1, int(comps.max()) + 1):
        comp = comps == label
        # enclosed slice regions mostly covered by this cavity's fat belong to it
        share = np.bincount(enc_lab[comp], minlength=n_enc + 1)
        take = share >= s.enclosed_share * np.maximum(enc_size, 1)
        take[0] = False
        comp = comp | take[enc_lab]
        box = bbox_slices(comp, pad)
        assert box is not None
        sub = np.pad(comp[box], [(p, p) for p in pad])
        unpad = tuple(slice(p, -p) for p in pad)
        closed = close_ball(sub, s.closing_mm, spacing)[unpad] | comp[box]
        if s.hull_claims:
            # ... of the hull, only what the cortex surrounds (not the muscle beside a bone's flare)
            near = within_in_plane(comp[box], s.hull_mm, spacing)
            closed |= _hull_per_slice(comp[box]) & (rays[box] >= s.ray_enclosed) & near
        closed = fill_holes_per_slice(closed)
        closed = np.asarray(ndi.binary_fill_holes(closed))
        # never claim voxels outside the body, on a wall, or already given to another bone, and
        # only what the cavity reaches in-plane without crossing its cortex: a closing or filling
        # that bridges the joint space must not bring cartilage, fluid or fat pads in with it
        region = bones[box]
        free = closed & body[box] & (region == 0) & (~wall[box] | comp[box])
        claim = ndi.binary_propagation(comp[box] & free, structure=in_plane, mask=free)
        region[claim] = label
    normal = fat & (bones > 0)
    reach = None
    if s.lesion_reach_mm > 0 and bones.any():
        reach = (_lesion_reach(bones, wall, spacing, s.lesion_reach_mm, s.cortex_search_mm) & body
                 & (rays >= s.reach_rays))
        if s.reach_slices > 0:
            # where a lesion replaced a slice's fat, the bone's neighbouring slices still outline it
            # (find_marrow keeps the whole reach to the T1's coverage and off fluid)
            across = np.ones((1, 1, 2 * s.reach_slices + 1), bool)
            reach |= (ndi.binary_dilation(reach | (bones > 0), structure=across) & body & ~wall
                      & (bones == 0) & (rays >= s.ray_enclosed)
                      & (sb > s.reach_slices_stir_muscle * levels["muscle_stir"]))
    return MarrowResult(bones, normal, levels, reach)
