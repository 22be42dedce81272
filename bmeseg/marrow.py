"""Where the marrow is.

Without a bone mask, marrow is found from the two images together:

1. the body outline (signal on either image, holes filled per slice);
2. **fat-like** voxels: bright on T1 *and* dark on the fat-suppressed image. Thresholds
   sit between the scan's own reference levels (low and high percentiles inside the
   body), so they follow the scanner's arbitrary units;
3. fat that touches the outer shell of the body is subcutaneous, not marrow; small or
   thin pieces (fat pads, chemical-shift rims) are dropped by size after a 1-voxel
   opening that cuts bridges through partial-volume voxels;
4. each remaining compact blob is one marrow cavity. It is closed (ball of
   ``closing_mm``) and hole-filled **bone by bone**, so lesions that darken T1 and
   brighten STIR inside the cavity, or bite into it from the subchondral plate, are
   included again without bridging the joint space between two bones.

With a bone mask or label map (``--bone-mask``), the marrow is that mask minus a
thin cortical rim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from ._morph import ball, bbox_slices, fill_holes_per_slice, largest_components
from .config import MarrowSettings
from .errors import InputError
from .volume import Volume

__all__ = ["MarrowResult", "body_mask", "find_marrow"]


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
    """

    bones: NDArray[np.int32]
    normal: NDArray[np.bool_]
    levels: dict[str, float]

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
    fg = fill_holes_per_slice(fg)
    lab = largest_components(fg, n=1)
    return lab > 0


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
    t_lo, t_hi = (float(v) for v in np.percentile(a[body], [20.0, 97.0]))
    s_lo, s_hi = (float(v) for v in np.percentile(b[body], [3.0, 97.0]))
    t_thr = t_lo + s.t1_fat_level * (t_hi - t_lo)
    s_thr = s_lo + s.stir_fat_level * (s_hi - s_lo)
    fat = body & (a > t_thr) & (b < s_thr)
    levels = {"t1_low": t_lo, "t1_high": t_hi, "t1_fat_threshold": t_thr,
              "stir_low": s_lo, "stir_high": s_hi, "stir_fat_threshold": s_thr}

    if bone_mask is not None:
        if not bone_mask.geometry.same_grid(stir.geometry, tol_mm=1e-2):
            raise InputError("bone mask is not on the fluid-sensitive grid (resample it first)")
        lab = np.asarray(bone_mask.array).astype(np.int32)
        if s.cortex_margin_mm > 0:
            inner = ndi.binary_erosion(lab > 0, structure=ball(s.cortex_margin_mm, spacing))
            lab = np.where(inner, lab, 0).astype(np.int32)
        return MarrowResult(lab, fat & (lab > 0), levels)

    # drop subcutaneous fat: fat components that reach the outer shell of the body
    shell = body & ~ndi.binary_erosion(body, structure=ball(s.body_shell_mm, spacing))
    fat_open = ndi.binary_opening(fat, structure=ndi.generate_binary_structure(3, 1))
    lab, n = ndi.label(fat_open, structure=ndi.generate_binary_structure(3, 1))
    if n:
        touching = np.unique(lab[shell & (lab > 0)])
        fat_open[np.isin(lab, touching)] = False
    min_vox = max(1, round(s.min_bone_ml / vox_ml))
    comps = largest_components(fat_open, n=s.max_bones, min_voxels=min_vox)

    # cortex: dark on both images (PD ~0.05, T2 ~1 ms); it encloses the cavity even where a
    # lesion has replaced the fat right up to the subchondral plate
    cortex = body & (a < s.cortex_t1_level * t_lo) & (b < s_thr)
    levels["cortex_t1_threshold"] = s.cortex_t1_level * t_lo

    bones = np.zeros(a.shape, np.int32)
    se = ball(s.closing_mm, spacing)
    near_se = ball(s.cortex_search_mm, spacing)
    pad = tuple(int(x) + 2 for x in np.maximum(np.array(se.shape), np.array(near_se.shape)) // 2)
    for label in range(1, int(comps.max()) + 1):
        comp = comps == label
        box = bbox_slices(comp, pad)
        assert box is not None
        sub = np.pad(comp[box], [(p, p) for p in pad])
        unpad = tuple(slice(p, -p) for p in pad)
        closed = ndi.binary_closing(sub, structure=se)[unpad]
        # the bone's own cortical ring, found near its fatty marrow, closes the holes that
        # lesions bite into the fatty region; filling per slice cannot leak through a gap
        ring = ndi.binary_dilation(sub, structure=near_se)[unpad] & cortex[box]
        enclosed = fill_holes_per_slice(closed | ring) & ~ring
        enclosed = np.asarray(ndi.binary_fill_holes(enclosed | closed))
        # never claim voxels outside the body or already given to another bone
        region = bones[box]
        claim = enclosed & body[box] & (region == 0)
        region[claim] = label
    normal = fat & (bones > 0)
    return MarrowResult(bones, normal, levels)
