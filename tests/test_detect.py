"""Marrow and edema on tiny synthetic pairs with known truth."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bmeseg.config import load_settings
from bmeseg.pipeline import detect

from .conftest import tiny_pair


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def test_lesion_found_and_subcutaneous_fat_is_not_marrow() -> None:
    t1, stir, truth = tiny_pair()
    s = load_settings("generic")
    marrow, edema, meas = detect(t1, stir, s)
    assert _dice(edema.mask, truth.array) > 0.7
    # subcutaneous fat (bright T1, dark STIR, at the body edge) is not marrow
    assert int(marrow.bones.max()) == 1
    assert len(meas.lesions) == 1
    les = meas.lesions[0]
    true_ml = truth.array.sum() * t1.geometry.voxel_volume_ml
    assert abs(les.volume_ml - true_ml) / true_ml < 0.3
    true_c = t1.geometry.index_to_lps(np.argwhere(truth.array).mean(0))
    assert np.linalg.norm(np.asarray(les.centroid_lps_mm) - true_c) < 3.0


def test_no_lesion_no_edema_and_deterministic() -> None:
    t1, stir, _ = tiny_pair(lesion=False, seed=3)
    s = load_settings("generic")
    _, e1, m1 = detect(t1, stir, s)
    _, e2, _ = detect(t1, stir, s)
    assert m1.bme_volume_ml < 0.2
    assert np.array_equal(e1.mask, e2.mask)


def test_without_bias_correction_one_reference_for_the_scan() -> None:
    """``bias_correction = false`` compares every voxel with the scan's one normal-marrow level.
    (It once sized the coarse reference grid from an effectively infinite sigma and asked numpy for
    petabytes.) The lesion is still found; the STIR ratio image is the STIR over one constant."""
    import dataclasses
    import math

    from bmeseg.edema import local_reference

    t1, stir, truth = tiny_pair()
    s = load_settings("generic")
    s = dataclasses.replace(s, edema=dataclasses.replace(s.edema, bias_correction=False))
    marrow, edema, _ = detect(t1, stir, s)
    assert _dice(edema.mask, truth.array) > 0.7
    assert np.isfinite(edema.stir_ratio).all()
    img = np.asarray(stir.array, np.float32)
    level = float(img[marrow.normal].mean())
    flat = local_reference(img, marrow.normal, math.inf, stir.geometry.spacing_mm)
    assert np.ptp(flat) == 0 and np.isclose(flat.flat[0], level, rtol=1e-4)
    # a very wide but finite sigma gives the same one level, not an out-of-memory error
    wide = local_reference(img, marrow.normal, 5000.0, stir.geometry.spacing_mm)
    assert np.allclose(wide, level, rtol=1e-3)


def _marrow_slab(seed: int) -> tuple[np.random.Generator, Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 50 x 50 voxel slab of marrow (T1 500, STIR 100, with noise) in a 60 x 60 x 6 volume at 1 x 1 x 3 mm,
    and two 12 x 12 x 4 regions inside it, for a mimic and a lesion. Returns the generator (for further
    noise), the geometry, T1, STIR, the bone labels and the two regions."""
    from bmeseg.volume import Geometry

    rng = np.random.default_rng(seed)
    shape = (60, 60, 6)
    g = Geometry(shape, (1.0, 1.0, 3.0), (0.0, 0.0, 0.0), np.eye(3))
    t1 = np.full(shape, 500.0) + rng.normal(0, 5, shape)
    stir = np.full(shape, 100.0) + rng.normal(0, 3, shape)
    bones = np.zeros(shape, np.int32)
    bones[5:55, 5:55, :] = 1
    first = np.zeros(shape, bool)
    first[10:22, 10:22, 1:5] = True
    second = np.zeros(shape, bool)
    second[35:47, 35:47, 1:5] = True
    return rng, g, t1, stir, bones, first, second


def _edema_inputs(
    g: Any, t1: np.ndarray, stir: np.ndarray, bones: np.ndarray, normal: np.ndarray, levels: dict[str, float],
) -> tuple[tuple[Any, Any], Any]:
    """The (T1, STIR) volumes and the marrow result that :func:`detect_edema` takes."""
    from bmeseg.marrow import MarrowResult
    from bmeseg.volume import Volume

    vols = Volume(t1.astype(np.float32), g), Volume(stir.astype(np.float32), g)
    return vols, MarrowResult(bones, normal, levels)


def test_stir_muscle_guard_keeps_muscle_like_signal_out_of_dark_marrow() -> None:
    """Where normal marrow is darker than muscle on STIR (fatty adult sacrum, the pelvis phantom),
    a fence set on marrow alone calls muscle-bright, T1-dark tissue BME. ``stir_muscle_ratio``
    raises the STIR threshold to that many times muscle; a fluid-bright lesion still passes."""
    import dataclasses

    from bmeseg.edema import detect_edema

    _, g, t1, stir, bones, mimic, lesion = _marrow_slab(0)
    # mimic: muscle-like, 1.6x marrow on STIR (muscle is 1.5x), T1-dark; lesion: oedema, 3x on STIR, T1-dark
    stir[mimic], t1[mimic] = 160.0, 300.0
    stir[lesion], t1[lesion] = 300.0, 300.0
    normal = (bones > 0) & ~mimic & ~lesion
    vols, marrow = _edema_inputs(g, t1, stir, bones, normal, {"muscle_stir": 150.0, "muscle_t1": 300.0})
    es = load_settings("sij").edema
    off = detect_edema(*vols, marrow, dataclasses.replace(es, stir_muscle_ratio=0.0))
    on = detect_edema(*vols, marrow, dataclasses.replace(es, stir_muscle_ratio=1.3))
    assert off.mask[mimic].mean() > 0.8 and off.mask[lesion].mean() > 0.8
    assert not on.mask[mimic].any() and on.mask[lesion].mean() > 0.8
    assert np.isclose(on.thresholds["stir_ratio"], 1.3 * 1.5, rtol=0.05)
    # report.json says how normal marrow stood against muscle on STIR (here 100 against 150)
    assert np.isclose(on.thresholds["reference_stir_over_muscle"], 100.0 / 150.0, rtol=0.05)


def test_sij_bme_must_be_t1_hypointense_not_only_stir_bright() -> None:
    """Marrow that is brighter only on the fluid-sensitive image (a T2 fat-sat that suppresses fat less
    well over part of the field, or fattier marrow with more water) keeps its normal T1. The sij preset
    asks BME to be T1-hypointense (<= 0.9x normal marrow); "not brighter than normal marrow" (1.0)
    flagged such marrow whenever noise put its T1 a little under the reference."""
    import dataclasses

    from bmeseg.edema import detect_edema

    rng, g, t1, stir, bones, bright, lesion = _marrow_slab(1)
    # bright: 2x marrow on STIR, T1 0.97x marrow (normal within its noise); lesion: oedema, 2x on STIR, T1 0.7x
    stir[bright | lesion] = 200.0
    t1[bright] = 485.0 + rng.normal(0, 5, int(bright.sum()))
    t1[lesion] = 350.0
    normal = (bones > 0) & ~bright & ~lesion
    vols, marrow = _edema_inputs(g, t1, stir, bones, normal, {"muscle_stir": 80.0, "muscle_t1": 300.0})
    es = load_settings("sij").edema
    assert es.t1_max_ratio <= 0.9
    loose = detect_edema(*vols, marrow, dataclasses.replace(es, t1_max_ratio=1.0))
    strict = detect_edema(*vols, marrow, es)
    assert loose.mask[bright].mean() > 0.5 and loose.mask[lesion].mean() > 0.8
    assert not strict.mask[bright].any() and strict.mask[lesion].mean() > 0.8


def test_a_lesion_with_too_little_of_itself_in_the_marrow_is_dropped() -> None:
    """``lesions.min_marrow_ml``: a component that grew into the reach from a few marrow voxels (a nerve
    root or a vein beside the bone) is dropped; one with enough of itself in the marrow is kept whole."""
    from bmeseg.config import LesionSettings
    from bmeseg.edema import clean_lesions

    marrow = np.zeros((40, 40, 6), bool)
    marrow[:, :20] = True
    mask = np.zeros_like(marrow)
    mask[5:15, 18:30, 1:4] = True  # 2 of its 12 columns in the marrow: 60 voxels
    mask[25:35, 10:30, 1:4] = True  # half in the marrow: 300 voxels
    vox_ml = 0.001
    ls = LesionSettings(min_lesion_ml=0.05, min_slices=2, min_marrow_ml=0.1)
    out = clean_lesions(mask, vox_ml, ls, marrow)
    assert not out[5:15].any()
    assert out[25:35, 10:30, 1:4].all() and out.sum() == 600
    # off (0), or without a marrow mask: both kept
    assert np.array_equal(clean_lesions(mask, vox_ml, LesionSettings(min_lesion_ml=0.05, min_slices=2)), mask)
    assert np.array_equal(clean_lesions(mask, vox_ml, ls), mask)


def test_a_lesion_mostly_on_the_stacks_outermost_slice_is_dropped() -> None:
    """``lesions.stack_edge_max_share``: on the first and last slice of a stack the slice cuts the bone's
    surface tangentially; a component lying mostly there (a nerve or vein on the bone, averaged with fat)
    is dropped, at either end. A lesion that only reaches the outermost slice is kept whole."""
    import dataclasses

    from bmeseg.config import LesionSettings
    from bmeseg.edema import clean_lesions

    mask = np.zeros((40, 40, 12), bool)
    mask[2:10, 2:10, 0:2] = True  # half of it on the first slice
    mask[2:10, 20:28, 10:12] = True  # half on the last slice
    mask[20:30, 2:12, 0:6] = True  # 6 slices from the first: 1/6 on it
    mask[20:30, 20:30, 3:7] = True  # in the middle of the stack
    vox_ml = 0.001
    ls = LesionSettings(min_lesion_ml=0.05, min_slices=2, stack_edge_max_share=0.2)
    out = clean_lesions(mask, vox_ml, ls)
    assert not out[2:10].any()
    assert out[20:30, 2:12, 0:6].all() and out[20:30, 20:30, 3:7].all()
    assert out.sum() == 600 + 400
    # a lower limit drops the six-slice lesion too; off (1, the default) keeps every one
    assert not clean_lesions(mask, vox_ml, dataclasses.replace(ls, stack_edge_max_share=0.15))[20:30, 2:12].any()
    assert np.array_equal(clean_lesions(mask, vox_ml, LesionSettings(min_lesion_ml=0.05, min_slices=2)), mask)
    # the SIJ preset asks for it; the knee preset does not
    assert load_settings("sij").lesions.stack_edge_max_share < 1
    assert load_settings("knee").lesions.stack_edge_max_share == 1


def test_report_says_how_much_the_stack_edge_test_dropped() -> None:
    """A researcher reviewing a short stack must see what the stack-edge test took away:
    ``edema_thresholds.stack_edge_dropped_ml`` is the volume of the components it alone dropped (0 when
    the test is off or dropped nothing)."""
    import dataclasses

    from bmeseg.edema import detect_edema

    _, g, t1, stir, bones, edge_piece, lesion = _marrow_slab(3)
    edge_piece[:] = False
    edge_piece[10:22, 10:22, 0:2] = True  # half of it on the first slice
    for m in (edge_piece, lesion):
        stir[m], t1[m] = 300.0, 300.0
    normal = (bones > 0) & ~edge_piece & ~lesion
    vols, marrow = _edema_inputs(g, t1, stir, bones, normal, {"muscle_stir": 80.0, "muscle_t1": 300.0})
    es = dataclasses.replace(load_settings("sij").edema, pv_fraction=0.0)
    ls = dataclasses.replace(load_settings("sij").lesions, min_slices=1)
    on = detect_edema(*vols, marrow, es, dataclasses.replace(ls, stack_edge_max_share=0.2))
    off = detect_edema(*vols, marrow, es, dataclasses.replace(ls, stack_edge_max_share=1.0))
    assert off.mask[edge_piece].mean() > 0.9 and off.mask[lesion].mean() > 0.9
    assert not on.mask[edge_piece].any() and on.mask[lesion].mean() > 0.9
    vox_ml = g.voxel_volume_ml
    dropped = float((off.mask & ~on.mask).sum()) * vox_ml
    assert on.thresholds["stack_edge_dropped_ml"] == pytest.approx(dropped)
    assert dropped >= edge_piece.sum() * vox_ml * 0.9
    assert off.thresholds["stack_edge_dropped_ml"] == 0.0


def test_reference_leaves_out_fat_partial_volume_round_a_thin_bone() -> None:
    """Round a thin bone tip many "normal" marrow voxels are partial volume with the fat outside it
    (bright on T1, dark on STIR). A mean reference drops there on STIR and rises on T1, and the normal
    marrow beside them looks like BME. ``reference_dark_k`` leaves voxels below the STIR Tukey fence out
    of the second pass's reference; a real lesion there is still found."""
    import dataclasses

    from bmeseg.edema import detect_edema

    _, g, t1, stir, bones, lesion, tip = _marrow_slab(2)
    ring = np.zeros_like(tip)
    ring[30:52, 30:52, :] = True
    ring &= ~tip  # a 5 mm rim round the tip: marrow-fat partial volume
    stir[ring], t1[ring] = 10.0, 1000.0
    stir[lesion], t1[lesion] = 250.0, 300.0
    normal = (bones > 0) & ~lesion
    vols, marrow = _edema_inputs(g, t1, stir, bones, normal, {"muscle_stir": 80.0, "muscle_t1": 300.0})
    es = dataclasses.replace(load_settings("sij").edema, reference_sigma_mm=8.0)
    assert es.reference_dark_k > 0
    off = detect_edema(*vols, marrow, dataclasses.replace(es, reference_dark_k=0.0))
    on = detect_edema(*vols, marrow, es)
    assert off.mask[tip].mean() > 0.5
    assert not on.mask[tip].any()
    assert on.mask[lesion].mean() > 0.9 and off.mask[lesion].mean() > 0.9


def test_a_drawn_reference_finds_diffuse_bme_the_automatic_one_absorbs() -> None:
    """Where BME fills most of the marrow, the automatic reference (local, from marrow with normal-looking
    T1) is itself oedema, and the oedema passes for normal. A drawn normal-marrow region (``reference``)
    gives the scan's true level: the oedema is found, the normal marrow is not flagged. Too small a drawn
    region is an error, not a silent fallback."""
    import pytest

    from bmeseg.edema import detect_edema
    from bmeseg.errors import InputError

    _, g, t1, stir, bones, _, _ = _marrow_slab(4)
    oedema = np.zeros_like(bones, bool)
    oedema[5:40, 5:55, :] = True  # 70 % of the marrow
    stir[oedema] = 200.0 + np.random.default_rng(5).normal(0, 3, int(oedema.sum()))
    t1[oedema] = 400.0  # 0.8x marrow
    vols, marrow = _edema_inputs(g, t1, stir, bones, bones > 0, {"muscle_stir": 80.0, "muscle_t1": 300.0})
    es = load_settings("sij").edema
    auto = detect_edema(*vols, marrow, es)
    assert auto.mask[oedema].mean() < 0.2
    drawn = np.zeros_like(oedema)
    drawn[45:52, 20:40, 1:5] = True  # normal marrow only
    ref = detect_edema(*vols, marrow, es, reference=drawn)
    assert ref.mask[oedema].mean() > 0.9
    assert not ref.mask[40:55].any()
    assert ref.thresholds["reference_drawn"] == 1.0 and auto.thresholds["reference_drawn"] == 0.0
    with pytest.raises(InputError, match="reference mask has 8 voxels"):
        detect_edema(*vols, marrow, es, reference=drawn & (np.arange(60)[:, None, None] == 45) & (np.arange(60)[None, :, None] < 22))


def test_margin_score_is_the_weaker_of_the_two_tests() -> None:
    from bmeseg.edema import margin_score

    # STIR ratio threshold 2.0, T1 ratio threshold 0.8: normal marrow, at both thresholds, STIR-only, both twice over
    stir = np.array([1.0, 2.0, 3.0, 3.0], np.float32)
    t1 = np.array([1.0, 0.8, 1.0, 0.6], np.float32)
    np.testing.assert_allclose(margin_score(stir, t1, 2.0, 0.8), [0.0, 1.0, 0.0, 2.0], atol=1e-6)


def test_half_contrast_outline_from_the_lesion_interior_is_not_lifted_by_noise() -> None:
    from bmeseg.edema import half_maximum

    rng = np.random.default_rng(3)
    ii, jj = np.mgrid[:48, :48]
    r = np.hypot(ii - 20, jj - 20)
    ratio = np.ones((48, 48, 3), np.float32)
    # a lesion with a flat core (excess 0.5, noise SD 0.1) and a soft 2-voxel rim at 0.28: over half the
    # core's contrast, under half its 90th percentile (~0.63)
    core2d, rim2d = r < 10, (r >= 10) & (r < 12)
    ratio[core2d] += 0.5 + 0.1 * rng.standard_normal((int(core2d.sum()), 3)).astype(np.float32)
    ratio[rim2d] += 0.28
    # a speck 3x3 voxels wide: no interior, so both ways use its 90th percentile
    ratio[40:43, 40:43, :2] = [[[1.6, 1.2]] * 3] * 3
    mask = np.zeros(ratio.shape, bool)
    mask[core2d | rim2d] = True
    mask[40:43, 40:43, :2] = True
    p90 = half_maximum(mask, ratio, 0.5, core="p90")
    inner = half_maximum(mask, ratio, 0.5, core="interior")
    rim = np.zeros_like(mask)
    rim[rim2d] = True
    assert not (p90 & rim).any()
    assert (inner & rim).sum() == rim.sum()
    # the interior's cut is the lower one: it keeps every core voxel the 90th percentile's cut keeps
    assert not (p90 & ~inner)[:35].any()
    np.testing.assert_array_equal(p90[35:], inner[35:])
    assert p90[40:43, 40:43, 0].all() and not p90[40:43, 40:43, 1].any()
