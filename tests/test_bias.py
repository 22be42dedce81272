"""Coil shading (:mod:`bmeseg.bias`): N4 before marrow finding (sij preset), and the shading measured
on fat for the knee's fat test."""

from __future__ import annotations

import dataclasses

import numpy as np

from bmeseg.bias import fat_shading, n4_field
from bmeseg.config import load_settings
from bmeseg.marrow import find_marrow
from bmeseg.volume import Geometry, Volume

SHAPE = (128, 128, 6)
SPACING = (1.5, 1.5, 4.0)


def _tissues() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body of muscle (T1 400) with fat (1500) and marrow-like (800) blocks; the muscle mask."""
    ii, jj = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    body = ((ii - 64) / 60.0) ** 2 + ((jj - 64) / 56.0) ** 2 < 1
    img = np.where(body, 400.0, 0.0)
    fat = body & (((ii - 64) / 60.0) ** 2 + ((jj - 64) / 56.0) ** 2 > 0.8)
    img[fat] = 1500.0
    marrow = (np.abs(ii - 50) < 12) & (np.abs(jj - 64) < 20)
    img[marrow] = 800.0
    muscle = body & ~fat & ~marrow
    rep = lambda a: np.repeat(a[:, :, None], SHAPE[2], axis=2)  # noqa: E731
    return rep(img).astype(np.float32), rep(body), rep(muscle)


def _coil(strength: float) -> np.ndarray:
    """A smooth coil-sensitivity field: brighter towards one side and one corner."""
    ii, jj = np.meshgrid(np.linspace(-1, 1, SHAPE[0]), np.linspace(-1, 1, SHAPE[1]), indexing="ij")
    log_f = strength * (0.8 * ii + 0.5 * (ii + jj) ** 2 / 4.0)
    return np.repeat(np.exp(log_f)[:, :, None], SHAPE[2], axis=2).astype(np.float32)


def test_n4_recovers_a_smooth_coil_field() -> None:
    img, body, muscle = _tissues()
    true = _coil(0.35)
    rng = np.random.default_rng(3)
    biased = np.abs(img * true + rng.normal(0, 12, img.shape) * body).astype(np.float32)
    est = n4_field(biased, body, SPACING)
    assert est.shape == img.shape and est.dtype == np.float32
    assert abs(float(np.median(est[body])) - 1.0) < 1e-3
    lt, le = np.log(true[body]), np.log(est[body])
    assert np.corrcoef(lt, le)[0, 1] > 0.9
    cv = lambda x: float(np.std(x) / np.mean(x))  # noqa: E731
    before = cv(biased[muscle])
    after = cv((biased / est)[muscle])
    assert before > 0.1
    assert after < 0.5 * before


def test_n4_on_a_tiny_mask_is_no_correction() -> None:
    img, body, _ = _tissues()
    tiny = np.zeros_like(body)
    tiny[60:65, 60:65, 2] = True
    assert np.array_equal(n4_field(img, tiny, SPACING), np.ones(SHAPE, np.float32))


def test_find_marrow_reads_tissue_levels_not_the_coil() -> None:
    """With ``bias_field = "n4"`` the scan's muscle and fat levels are the tissues' own: a coil that
    brightens one side no longer inflates the fat level (so muscle there would pass for marrow)."""
    img, body, _ = _tissues()
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 12, img.shape) * body
    stir = np.where(body, 300.0, 0.0).astype(np.float32)
    stir[img == 1500.0] = 80.0
    g = Geometry(SHAPE, SPACING, (0.0, 0.0, 0.0), np.eye(3))
    base = dataclasses.replace(load_settings("sij").marrow, support_close_mm=0.0)
    flat = find_marrow(Volume(np.abs(img + noise), g), Volume(stir, g), dataclasses.replace(base, bias_field="none"))
    coil = np.abs(img * _coil(0.5) + noise).astype(np.float32)
    raw = find_marrow(Volume(coil, g), Volume(stir, g), dataclasses.replace(base, bias_field="none"))
    n4 = find_marrow(Volume(coil, g), Volume(stir, g), dataclasses.replace(base, bias_field="n4"))
    ratio = lambda r: r.levels["fat_t1"] / r.levels["muscle_t1"]  # noqa: E731
    assert abs(ratio(raw) / ratio(flat) - 1) > 0.15  # the coil skews the fat-to-muscle contrast
    assert abs(ratio(n4) / ratio(flat) - 1) < 0.08


def test_fat_shading_recovers_the_coil_from_fat_alone() -> None:
    """Fat has one T1 level wherever it lies, so a log-polynomial fitted to the fat-like voxels is the
    coil's field: over the body it follows the true field, and fat divided by it is one level again."""
    img, body, _ = _tissues()
    true = _coil(0.4)
    rng = np.random.default_rng(4)
    biased = np.abs(img * true + rng.normal(0, 12, img.shape) * body).astype(np.float32)
    fat = img == 1500.0
    est = fat_shading(biased, fat, SPACING)
    assert est.shape == img.shape and est.dtype == np.float32
    assert abs(float(np.median(est[fat])) - 1.0) < 1e-3
    assert np.corrcoef(np.log(true[body]), np.log(est[body]))[0, 1] > 0.95
    cv = lambda x: float(np.std(x) / np.mean(x))  # noqa: E731
    assert cv(biased[fat]) > 0.1
    assert cv((biased / est)[fat]) < 0.3 * cv(biased[fat])
    # too few fat voxels to fit: no correction
    tiny = np.zeros_like(fat)
    tiny[0:5, 60:65, 2] = True
    assert np.array_equal(fat_shading(biased, tiny, SPACING), np.ones(SHAPE, np.float32))


def test_fat_shading_keeps_the_coils_far_side_of_a_bone_in_the_marrow() -> None:
    """Knee cavity search: the fat threshold sits between the scan's own levels, and the brightest fat
    lies by the coil. On the coil's far slices the yellow marrow falls under it and that end of the bone
    is never searched; with ``fat_shading_degree`` the fat test lifts it back to the scan's fat level."""
    from tests.conftest import tiny_pair

    t1, stir, _ = tiny_pair(seed=2, lesion=False)
    g = t1.geometry
    kk = np.linspace(-1.0, 1.0, g.shape[2])[None, None, :]
    coil = np.exp(0.45 * kk).astype(np.float32)  # x0.64 .. x1.57 across the slices
    shaded = Volume(np.asarray(t1.array) * coil, g)
    base = load_settings("knee").marrow
    flat = find_marrow(t1, stir, base)
    off = find_marrow(shaded, stir, base)
    on = find_marrow(shaded, stir, dataclasses.replace(base, fat_shading_degree=2))
    vol = lambda r: int((r.bones > 0).sum())  # noqa: E731
    assert vol(off) < 0.8 * vol(flat)  # the shaded end of the marrow is lost
    assert vol(on) > 0.98 * vol(flat)
    assert off.levels["t1_fat_shading_lift"] == 1.0 and on.levels["t1_fat_shading_lift"] > 1.3
