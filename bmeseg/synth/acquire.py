"""Simulate 2-D multi-slice MR acquisitions of a :class:`~bmeseg.synth.phantom.Phantom`.

Each series has its own grid (plane, obliquity, matrix, pixel size, slice
thickness and gap). The fine-grid signal is averaged over every voxel's
footprint (slice profile along the normal, pixel in-plane) by supersampling
with trilinear interpolation, multiplied by a smooth coil-sensitivity (bias)
field and corrupted by Rician noise. A rigid transform can move the anatomy
between series (patient motion).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from ..volume import Geometry
from .phantom import FineGrid

__all__ = [
    "PLANES",
    "bias_field",
    "plane_geometry",
    "rician_noise",
    "rigid_matrix",
    "sample_labels",
    "sample_signal",
]

#: (row direction, column direction) in LPS for each base plane; slices run along row x column
PLANES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
}


def plane_geometry(
    plane: str,
    *,
    matrix: tuple[int, int],
    fov_mm: float | tuple[float, float],
    n_slices: int,
    slice_spacing_mm: float,
    center_lps_mm: ArrayLike,
    oblique_deg: ArrayLike = (0.0, 0.0, 0.0),
) -> Geometry:
    """Grid of a 2-D multi-slice series.

    Parameters
    ----------
    plane : {'sagittal', 'coronal', 'axial'}
    matrix : (int, int)
        ``(columns, rows)`` = size along ``i`` (row direction) and ``j``.
    fov_mm : float or (float, float)
        Field of view along ``i`` and ``j``, mm.
    n_slices : int
    slice_spacing_mm : float
        Centre-to-centre slice distance (thickness + gap), mm.
    center_lps_mm : (3,) array
        LPS position of the centre of the slab.
    oblique_deg : (3,) array
        Rotation vector (degrees, about L, P, S) applied to the base plane.

    Returns
    -------
    Geometry
        ``direction`` columns: row, column and slice-normal (``row x column``) unit vectors.
    """
    if plane not in PLANES:
        raise ValueError(f"'plane' must be one of {set(PLANES)}; got {plane!r}")
    row, col = (np.asarray(v) for v in PLANES[plane])
    d = np.stack([row, col, np.cross(row, col)], axis=1)
    rv = np.deg2rad(np.asarray(oblique_deg, dtype=float))
    if np.any(rv):
        d = Rotation.from_rotvec(rv).as_matrix() @ d
    fov = (float(fov_mm), float(fov_mm)) if np.isscalar(fov_mm) else tuple(map(float, fov_mm))  # type: ignore[arg-type]
    spacing = (fov[0] / matrix[0], fov[1] / matrix[1], float(slice_spacing_mm))
    shape = (int(matrix[0]), int(matrix[1]), int(n_slices))
    half = (np.asarray(shape, dtype=float) - 1) / 2 * np.asarray(spacing)
    origin = np.asarray(center_lps_mm, dtype=float) - d @ half
    return Geometry(shape, spacing, tuple(origin), d)  # type: ignore[arg-type]


def rigid_matrix(rot_deg: ArrayLike, trans_mm: ArrayLike, center_lps_mm: ArrayLike) -> NDArray[np.float64]:
    """4x4 LPS rigid transform ``x -> R (x - c) + c + t`` (rotation vector in degrees)."""
    r = Rotation.from_rotvec(np.deg2rad(np.asarray(rot_deg, dtype=float))).as_matrix()
    c = np.asarray(center_lps_mm, dtype=float)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(trans_mm, dtype=float)
    return m


@dataclass(frozen=True)
class _Footprint:
    base: NDArray[np.float64]  # (3, N) fine-grid index of voxel centres
    deltas: NDArray[np.float64]  # (M, 3) fine-grid index offsets of the sub-samples


def _footprint(grid: FineGrid, target: Geometry, *, anatomy_from_world: NDArray[np.float64] | None,
               slice_thickness_mm: float, supersample_mm: float) -> _Footprint:
    world_to_fine = np.linalg.inv(grid.geometry.affine)
    m = world_to_fine @ (np.eye(4) if anatomy_from_world is None else anatomy_from_world) @ target.affine
    ijk = np.indices(target.shape, dtype=np.float64).reshape(3, -1)
    base = m[:3, :3] @ ijk + m[:3, 3:4]
    sp = np.asarray(target.spacing_mm)
    inplane_pitch = max(1.5 * grid.res_mm, supersample_mm)
    n = [max(1, math.ceil(sp[0] / inplane_pitch)), max(1, math.ceil(sp[1] / inplane_pitch)),
         max(1, math.ceil(slice_thickness_mm / supersample_mm))]
    ext = [sp[0], sp[1], slice_thickness_mm]
    axes = [((np.arange(k) + 0.5) / k - 0.5) * e for k, e in zip(n, ext, strict=True)]
    local = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)  # mm along i, j, k axes
    unit = m[:3, :3] / sp[None, :]  # fine-index change per mm along each target axis
    return _Footprint(base, local @ unit.T)


def _samples(fp: _Footprint) -> Iterator[NDArray[np.float64]]:
    for d in fp.deltas:
        yield fp.base + d[:, None]


def sample_signal(field: NDArray[np.float32], grid: FineGrid, target: Geometry, *,
                  slice_thickness_mm: float, anatomy_from_world: NDArray[np.float64] | None = None,
                  supersample_mm: float = 0.75) -> NDArray[np.float32]:
    """Average a fine-grid map over each target voxel's footprint.

    Parameters
    ----------
    field : ndarray, shape ``grid.shape``
        Fine-grid values (e.g. signed signal); outside the grid counts as 0.
    grid : FineGrid
    target : Geometry
        Series grid; its voxels are ``spacing[0] x spacing[1]`` in-plane and
        ``slice_thickness_mm`` thick (uniform slice profile), centred on the grid points.
    anatomy_from_world : (4, 4) array, optional
        Maps a point of the series' world (LPS) to the phantom point seen there
        (the inverse of the patient motion). ``None`` = no motion.
    supersample_mm : float
        Sub-sample pitch through the slice (and in-plane, at least 1.5 fine voxels).

    Returns
    -------
    ndarray of float32, shape ``target.shape``
    """
    fp = _footprint(grid, target, anatomy_from_world=anatomy_from_world,
                    slice_thickness_mm=slice_thickness_mm, supersample_mm=supersample_mm)
    acc = np.zeros(fp.base.shape[1], dtype=np.float64)
    for coords in _samples(fp):
        acc += ndi.map_coordinates(field, coords, order=1, mode="constant", cval=0.0, prefilter=False)
    return (acc / len(fp.deltas)).astype(np.float32).reshape(target.shape)


def sample_labels(labels: NDArray[np.integer], grid: FineGrid, target: Geometry, *, slice_thickness_mm: float,
                  values: ArrayLike, anatomy_from_world: NDArray[np.float64] | None = None,
                  supersample_mm: float = 0.75) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """Majority label of each target voxel's footprint, and its partial-volume fraction.

    Parameters
    ----------
    labels : ndarray of int, shape ``grid.shape``
    values : sequence of int
        Label values to count (others, and 0, count as background).

    Returns
    -------
    label : ndarray of uint8, shape ``target.shape``
        The most frequent of ``values`` when its fraction is >= 0.5, else 0.
    fraction : ndarray of float32, shape ``target.shape``
        Fraction of the footprint covered by that most frequent label (0-1).
    """
    vals = [int(v) for v in np.asarray(values).ravel().tolist()]
    fp = _footprint(grid, target, anatomy_from_world=anatomy_from_world,
                    slice_thickness_mm=slice_thickness_mm, supersample_mm=supersample_mm)
    counts = np.zeros((len(vals), fp.base.shape[1]), dtype=np.uint16)
    for coords in _samples(fp):
        lab = ndi.map_coordinates(labels, coords, order=0, mode="constant", cval=0, prefilter=False)
        for n, v in enumerate(vals):
            counts[n] += lab == v
    if not vals:
        z = np.zeros(target.shape)
        return z.astype(np.uint8), z.astype(np.float32)
    best = np.argmax(counts, axis=0)
    frac = counts[best, np.arange(counts.shape[1])] / float(len(fp.deltas))
    out = np.where(frac >= 0.5, np.asarray(vals, dtype=np.uint8)[best], 0).astype(np.uint8)
    return out.reshape(target.shape), frac.astype(np.float32).reshape(target.shape)


def bias_field(target: Geometry, *, strength: float, rng: np.random.Generator,
               center_lps_mm: ArrayLike | None = None) -> NDArray[np.float32]:
    """Smooth multiplicative coil-sensitivity field on ``target`` (mean ~1).

    ``exp(strength * P(x))`` with ``P`` a random quadratic polynomial of LPS
    position, scaled to unit standard deviation over the grid.
    """
    pts = target.index_to_lps(np.indices(target.shape, dtype=np.float64).reshape(3, -1).T)
    c = pts.mean(axis=0) if center_lps_mm is None else np.asarray(center_lps_mm, dtype=float)
    u = (pts - c) / 100.0
    terms = [u[:, 0], u[:, 1], u[:, 2], u[:, 0] ** 2, u[:, 1] ** 2, u[:, 2] ** 2,
             u[:, 0] * u[:, 1], u[:, 0] * u[:, 2], u[:, 1] * u[:, 2]]
    coef = rng.normal(size=len(terms)) * np.array([1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    p = sum(a * t for a, t in zip(coef, terms, strict=True))
    assert isinstance(p, np.ndarray)
    sd = float(p.std())
    p = (p - p.mean()) / (sd if sd > 0 else 1.0)
    return np.exp(strength * p).astype(np.float32).reshape(target.shape)


def rician_noise(signal: NDArray[np.floating], *, sigma: float, rng: np.random.Generator) -> NDArray[np.float32]:
    """Magnitude of ``signal + N(0, sigma) + i N(0, sigma)`` (Rician; Rayleigh where signal is 0)."""
    re = signal + rng.normal(0.0, sigma, size=signal.shape)
    im = rng.normal(0.0, sigma, size=signal.shape)
    return np.hypot(re, im).astype(np.float32)
