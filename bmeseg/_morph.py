"""Small morphology helpers that respect anisotropic voxel spacing (mm)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

__all__ = ["ball", "bbox_slices", "fill_holes_per_slice", "in_plane_structure", "largest_components", "sigma_vox"]


def ball(radius_mm: float, spacing_mm: Sequence[float]) -> NDArray[np.bool_]:
    """Ellipsoidal structuring element of physical radius ``radius_mm`` on a grid of ``spacing_mm``.

    An axis whose spacing exceeds the radius gets extent 1 (no reach across slices).
    """
    r = [max(0, int(np.floor(radius_mm / s + 1e-6))) for s in spacing_mm]
    grids = np.ogrid[tuple(slice(-ri, ri + 1) for ri in r)]
    d2 = sum((g * s / max(radius_mm, 1e-9)) ** 2 for g, s in zip(grids, spacing_mm, strict=True))
    return np.asarray(d2 <= 1.0 + 1e-9)


def sigma_vox(sigma_mm: float, spacing_mm: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(sigma_mm) / float(s) for s in spacing_mm)


def in_plane_structure(axis: int = 2) -> NDArray[np.bool_]:
    """3-D structuring element with 4-connectivity inside each slice along ``axis`` and none
    across slices: labelling or filling with it works slice by slice in one vectorised call."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    idx: list[slice | int] = [slice(None)] * 3
    idx[axis] = 1
    structure[tuple(idx)] = ndi.generate_binary_structure(2, 1)
    return structure


def fill_holes_per_slice(mask: NDArray[np.bool_], axis: int = 2) -> NDArray[np.bool_]:
    """2-D hole filling in every slice along ``axis``."""
    return np.asarray(ndi.binary_fill_holes(mask, structure=in_plane_structure(axis)))


def largest_components(
    mask: NDArray[np.bool_], *, n: int | None = None, min_voxels: int = 1, connectivity: int = 1
) -> NDArray[np.int32]:
    """Label connected components, keep those of >= ``min_voxels`` (at most ``n``, largest first).

    Returns a label image with labels 1..k ordered by decreasing size.
    """
    structure = ndi.generate_binary_structure(3, connectivity)
    lab, nlab = ndi.label(mask, structure=structure)
    if nlab == 0:
        return np.zeros(mask.shape, np.int32)
    sizes = np.bincount(lab.ravel(), minlength=nlab + 1)
    sizes[0] = 0
    order = np.argsort(-sizes, kind="stable")
    keep = [int(i) for i in order if sizes[i] >= min_voxels and i != 0]
    if n is not None:
        keep = keep[:n]
    remap = np.zeros(nlab + 1, np.int32)
    remap[keep] = np.arange(1, len(keep) + 1, dtype=np.int32)
    return remap[lab]


def bbox_slices(mask: NDArray[np.bool_], pad: Sequence[int] = (0, 0, 0)) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` as slices, padded by ``pad`` voxels and clipped to the array."""
    if not mask.any():
        return None
    out = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        nz = np.flatnonzero(mask.any(axis=other))
        lo = max(0, int(nz[0]) - int(pad[ax]))
        hi = min(mask.shape[ax], int(nz[-1]) + 1 + int(pad[ax]))
        out.append(slice(lo, hi))
    return tuple(out)
