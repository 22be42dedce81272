"""Slow coil-sensitivity (bias) field of one image: by N4 (SimpleITK), or measured on fat.

Surface and phased-array coils make the same tissue brighter near the coil and darker far from
it, by 10-40 % across a pelvis. Marrow finding compares each voxel with the scan's muscle and fat
levels; without a correction the muscle near the coil passes for marrow on T1. N4 (Tustison et
al., IEEE TMI 2010) models the log-field as a smooth B-spline that sharpens the image's
histogram; it is run on a grid shrunk to about ``shrink_mm`` in-plane (the field varies over
centimetres), never across thick slices, and the fitted field is then evaluated on the full grid.

:func:`fat_shading` measures the field on fat alone, where fat is plentiful (the knee: subcutaneous
fat, fat pads, yellow marrow): a low-order log-polynomial of position fitted robustly to the fat-like
voxels (the parametric bias models of Styner et al., IEEE TMI 2000, on one tissue class). The knee's
fat test uses it; N4's histogram sharpening, tried there, also moved the knee's other tissue levels.

The field is returned normalised to a median of 1 inside the mask, so the corrected image keeps
the scanner's units on average (and every threshold that is a fraction between the scan's own
tissue levels means the same as before).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["fat_shading", "n4_field"]


def n4_field(
    image: NDArray[np.floating], mask: NDArray[np.bool_], spacing_mm: tuple[float, ...], *,
    shrink_mm: float = 12.0, iterations: tuple[int, ...] = (50, 50, 50), control_points: int = 4,
) -> NDArray[np.float32]:
    """Multiplicative bias field of ``image`` (same shape, median 1 over ``mask``).

    Parameters
    ----------
    image : (I, J, K) array
        Magnitude image, ``[i, j, k]`` order with ``spacing_mm`` per axis.
    mask : (I, J, K) bool
        Where the field is fitted (the body, seen by the series).
    shrink_mm : float
        Target in-plane voxel size of the fitting grid; slices are never merged.
    iterations : tuple of int
        N4 iterations per fitting level (one level per entry; each doubles the B-spline resolution).
    control_points : int
        B-spline control points per axis at the first level.

    Returns
    -------
    (I, J, K) float32
        The field; divide the image by it to correct.
    """
    import SimpleITK as sitk

    img = np.asarray(image, dtype=np.float32)
    m = np.asarray(mask, bool)
    if m.sum() < 1000:
        return np.ones(img.shape, np.float32)
    # N4 works on log intensities: a floor keeps zeros (uncovered corners, dark noise) finite
    floor = max(float(np.percentile(img[m], 1.0)), 1e-3)
    work = np.maximum(img, floor)
    sim = sitk.GetImageFromArray(np.ascontiguousarray(work.transpose(2, 1, 0)))
    sim.SetSpacing(tuple(float(s) for s in spacing_mm))
    smask = sitk.GetImageFromArray(np.ascontiguousarray(m.transpose(2, 1, 0)).astype(np.uint8))
    smask.CopyInformation(sim)
    factors = [max(1, round(shrink_mm / float(s))) for s in spacing_mm[:2]] + [1]
    # never shrink an axis below a few voxels (tiny test volumes)
    factors = [min(f, max(1, n // 4)) for f, n in zip(factors, img.shape, strict=True)]
    small, small_mask = sitk.Shrink(sim, factors), sitk.Shrink(smask, factors)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.SetNumberOfControlPoints([int(control_points)] * 3)
    n4.Execute(small, small_mask)
    log_field = np.asarray(sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(sim)), np.float32).transpose(2, 1, 0)
    log_field -= float(np.median(log_field[m]))
    return np.exp(log_field)


def fat_shading(
    image: NDArray[np.floating], fatlike: NDArray[np.bool_], spacing_mm: tuple[float, ...], *,
    degree: int = 2, max_samples: int = 200_000, clip: float = 2.5,
) -> NDArray[np.float32]:
    """Coil shading of ``image`` measured on fat: a smooth log-polynomial fitted to the fat-like voxels.

    Fat has one T1 level wherever it lies (subcutaneous, intermuscular, yellow marrow), so the way
    its level drifts across the field of view *is* the coil's sensitivity. ``log(image)`` over
    ``fatlike`` is fitted by a polynomial of position (mm, every term up to ``degree``), robustly: the
    fit is repeated without voxels more than ``clip`` MADs from it (fat averaged with cortex or
    muscle at its edge is darker). Returns the field (median 1 over ``fatlike``); all ones when there
    are too few fat voxels to fit.
    """
    m = np.asarray(fatlike, bool)
    img = np.asarray(image, dtype=np.float32)
    n_terms = (degree + 1) * (degree + 2) * (degree + 3) // 6
    idx = np.flatnonzero(m.ravel() & (img.ravel() > 0))
    if idx.size < 50 * n_terms:
        return np.ones(img.shape, np.float32)
    idx = idx[:: max(1, idx.size // max_samples)]  # deterministic subsample
    centre = [(n - 1) / 2.0 for n in img.shape]
    scale = 100.0  # mm: keeps the monomials near 1 over a field of view
    powers = [(i, j, k) for i in range(degree + 1) for j in range(degree + 1 - i) for k in range(degree + 1 - i - j)]

    def axis_mm(ax: int, ind: NDArray[np.integer] | NDArray[np.floating]) -> NDArray[np.float64]:
        return (np.asarray(ind, np.float64) - centre[ax]) * float(spacing_mm[ax]) / scale

    pos = [axis_mm(ax, p) for ax, p in enumerate(np.unravel_index(idx, img.shape))]
    design = np.stack([pos[0] ** i * pos[1] ** j * pos[2] ** k for i, j, k in powers], axis=1)
    y = np.log(img.ravel()[idx].astype(np.float64))
    use = np.ones(y.size, bool)
    coef: NDArray[np.floating] = np.zeros(len(powers))
    for _ in range(4):
        d = design[use]
        coef = np.linalg.lstsq(d.T @ d, d.T @ y[use], rcond=None)[0]  # normal equations: a small system
        res = y - design @ coef
        mad = float(np.median(np.abs(res[use] - np.median(res[use])))) * 1.4826
        if mad <= 0:
            break
        use = np.abs(res - np.median(res[use])) <= clip * mad
    # the polynomial on the full grid from per-axis powers: one in-plane polynomial per power of the
    # third axis, then one full-size pass per power (no full-size design matrix)
    gi, gj, gk = (axis_mm(ax, np.arange(n)) for ax, n in enumerate(img.shape))
    log_field = np.zeros(img.shape, np.float32)
    for k in range(degree + 1):
        plane = sum(c * np.outer(gi**i, gj**j) for c, (i, j, kk) in zip(coef, powers, strict=True) if kk == k)
        log_field += np.asarray(plane, np.float32)[:, :, None] * (gk**k).astype(np.float32)[None, None, :]
    log_field -= np.float32(np.median(design @ coef))  # median 1 over the (sampled) fat-like voxels
    return np.exp(log_field, out=log_field)
