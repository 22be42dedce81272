"""The mixed-marrow ground of the periarticular search (sij preset) and the fluid test's T1 level.

Scene values are in units of muscle: muscle T1 400, fat T1 1500, mixed marrow T1 700 (0.27 of the
muscle-to-fat range, as normal sacral marrow on the real SIJ scans), muscle STIR 300.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from bmeseg.config import load_settings
from bmeseg.marrow import _fat_ringed, _fluid, _marrow_support, find_marrow
from bmeseg.volume import Geometry, Volume

SHAPE = (120, 120, 4)
SPACING = (0.6, 0.6, 3.3)
LEVELS = {"muscle_t1": 400.0, "fat_t1": 1500.0, "muscle_stir": 300.0}


def _scene() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    ii, jj = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    t1 = np.full(SHAPE, 400.0, np.float32)
    st = np.full(SHAPE, 300.0, np.float32)
    bone2 = np.hypot(ii - 40, jj - 40) < 25  # 15 mm radius: ~7 cm2 per slice
    lesion2 = np.hypot(ii - 40, jj - 52) < 8  # 4.8 mm, 3 mm short of the bone's edge: T1 as dark as muscle
    speck2 = np.hypot(ii - 95, jj - 95) < 6  # ~0.4 cm2 of marrow-like signal: bowel, a vessel's wall
    rim2 = (np.abs(ii - 95) <= 1) & (jj < 70)  # a 3-voxel fat plane through muscle
    t1[bone2] = 700.0
    t1[lesion2 & bone2] = 400.0
    st[lesion2 & bone2] = 700.0
    t1[speck2] = 700.0
    t1[rim2] = 1500.0
    masks = {name: np.repeat(m[:, :, None], SHAPE[2], axis=2) for name, m in
             (("bone", bone2), ("lesion", lesion2 & bone2), ("speck", speck2), ("rim", rim2))}
    return t1, st, masks


def _support(t1: np.ndarray, st: np.ndarray, joint: np.ndarray | None = None) -> np.ndarray:
    s = load_settings("sij").marrow
    sig = (0.5 / SPACING[0], 0.5 / SPACING[1], 0.0)  # the same light smoothing find_marrow applies
    sa, sb = ndi.gaussian_filter(t1, sig), ndi.gaussian_filter(st, sig)
    inner = np.ones(SHAPE, bool)
    return _marrow_support(sa, sb, inner, LEVELS, SPACING, s, joint=joint)


def test_support_keeps_bone_with_its_lesion_and_drops_muscle_rims_and_specks() -> None:
    t1, st, m = _scene()
    sup = _support(t1, st)
    assert sup[m["bone"]].mean() > 0.99
    assert sup[m["lesion"]].all()  # darkened T1 inside the bone: closed back in
    assert not sup[m["speck"]].any()  # smaller than a bone's cross-section
    # the fat plane's partial-volume edges are marrow-like in T1 but thin: opened away
    near_rim = np.zeros(SHAPE, bool)
    near_rim[92:99, :70] = True
    assert not sup[near_rim].any()
    muscle = ~m["bone"] & ~m["speck"] & ~m["rim"]
    assert sup[muscle].mean() < 0.02


def test_joint_cortex_walls_in_bme_that_replaced_the_marrow_up_to_the_plate() -> None:
    """A lesion 21 mm along the joint and 9 mm deep, T1 as dark as muscle, between the marrow and the
    articular cortex: the closing cannot bridge its mouth, so only the cortex as a wall (the
    ``support_joint_walls`` hole filling) makes it bone. The muscle beyond the joint stays out."""
    t1 = np.full(SHAPE, 400.0, np.float32)
    st = np.full(SHAPE, 300.0, np.float32)
    t1[15:90, 15:60] = 700.0  # mixed marrow
    t1[35:70, 45:60] = 400.0  # the lesion: no marrow-like T1 left ...
    st[35:70, 45:60] = 700.0
    t1[10:95, 60:63], st[10:95, 60:63] = 150.0, 100.0  # ... up to the articular cortex
    lesion = np.zeros(SHAPE, bool)
    lesion[35:70, 45:60] = True
    joint = np.zeros(SHAPE, bool)
    joint[10:95, 60:63] = True
    assert load_settings("sij").marrow.support_joint_walls
    plain = _support(t1, st)
    walled = _support(t1, st, joint)
    assert plain[lesion].mean() < 0.5  # the closing reaches only the lesion's corners (0.16)
    assert walled[lesion].mean() > 0.98
    assert not walled[joint].any()  # the joint is never marrow
    assert not walled[:, 63:].any()  # nor the muscle beyond it
    assert (walled & ~plain & ~lesion).sum() < 0.02 * lesion.sum()


def test_support_is_off_without_marrow_like_ground() -> None:
    t1, st, _ = _scene()
    t1[:] = 400.0  # all muscle
    assert not _support(t1, st).any()


def test_fluid_t1_level_decides_partial_volume_csf() -> None:
    # CSF with nerve roots: STIR 5x muscle, T1 0.88x muscle (measured on a real sacral canal)
    sa = np.full(SHAPE, 400.0, np.float32)
    sb = np.full(SHAPE, 300.0, np.float32)
    sa[50:60, 50:60] = 0.88 * 400.0
    sb[50:60, 50:60] = 5 * 300.0
    s = load_settings("sij").marrow
    assert s.fluid_t1_level == 1.0
    assert _fluid(sa, sb, LEVELS, s, SPACING)[52:58, 52:58].all()
    strict = dataclasses.replace(s, fluid_t1_level=0.6)  # the knee's level: cortex-dark fluid only
    assert not _fluid(sa, sb, LEVELS, strict, SPACING).any()


def test_knee_fluid_level_takes_effusion_and_leaves_bme() -> None:
    # knee: effusion 2.6x muscle on STIR and 0.5x on T1 is fluid; BME (1.6x on STIR, as dark as
    # muscle on T1) is not, however bright on STIR, while its T1 stays above the fluid level
    sa = np.full(SHAPE, 400.0, np.float32)
    sb = np.full(SHAPE, 300.0, np.float32)
    sa[20:30, 20:30], sb[20:30, 20:30] = 0.5 * 400.0, 2.6 * 300.0  # effusion
    sa[60:70, 60:70], sb[60:70, 60:70] = 0.9 * 400.0, 1.6 * 300.0  # BME
    sa[90:100, 90:100], sb[90:100, 90:100] = 0.75 * 400.0, 2.8 * 300.0  # intense BME
    s = load_settings("knee").marrow
    fl = _fluid(sa, sb, LEVELS, s, SPACING)
    assert fl[22:28, 22:28].all()
    assert not fl[55:75, 55:75].any() and not fl[85:105, 85:105].any()
    assert not _fluid(sa, sb, LEVELS, dataclasses.replace(s, fluid_stir_ratio=3.0), SPACING).any()


def test_a_body_of_fluid_keeps_the_marrow_at_a_distance() -> None:
    # a CSF column (~3 mL over the slab) gets the wide margin; a small fluid pocket only 1 mm
    sa = np.full(SHAPE, 400.0, np.float32)
    sb = np.full(SHAPE, 300.0, np.float32)
    sa[20:50, 20:50], sb[20:50, 20:50] = 200.0, 1500.0  # 18 x 18 mm x 4 slices: 4.3 mL
    sa[90:93, 90:93], sb[90:93, 90:93] = 200.0, 1500.0  # 1.8 mm pocket: 0.04 mL
    s = dataclasses.replace(load_settings("sij").marrow, fluid_body_ml=1.0, fluid_body_margin_mm=6.0)
    out = _fluid(sa, sb, LEVELS, s, SPACING)
    assert out[20:50, 55:59].all() and not out[20:50, 62:].any()  # 6 mm = 10 px beyond the column's edge
    assert out[89:94, 89:94].all() and not out[86, 91].any() and not out[96, 91].any()  # 1 mm = 1-2 px
    off = _fluid(sa, sb, LEVELS, dataclasses.replace(s, fluid_body_margin_mm=0.0), SPACING)
    assert not off[20:50, 55:59].any()


def test_only_a_midline_body_of_fluid_gets_the_wide_margin() -> None:
    # the thecal sac sits on the body's middle; a fluid-bright body of the same size beside a joint
    # (intense BME with T1 below muscle) keeps only the 1 mm growth when fluid_body_midline_mm is set
    sa = np.full(SHAPE, 400.0, np.float32)
    sb = np.full(SHAPE, 300.0, np.float32)
    sa[10:40, 45:75], sb[10:40, 45:75] = 200.0, 1500.0  # rows 10-39: ~1-19 mm from the middle (row 9)
    sa[80:110, 45:75], sb[80:110, 45:75] = 200.0, 1500.0  # rows 80-109: ~43-60 mm out
    x = np.broadcast_to(((np.arange(SHAPE[0]) - 9.0) * SPACING[0])[:, None, None], SHAPE)
    s = dataclasses.replace(load_settings("sij").marrow, fluid_body_ml=1.0, fluid_body_margin_mm=6.0,
                            fluid_body_midline_mm=30.0)
    out = _fluid(sa, sb, LEVELS, s, SPACING, x)
    assert out[10:40, 77:82].all() and not out[10:40, 87:].any()  # midline body: 6 mm = 10 px
    assert out[80:110, 75].all() and not out[80:110, 78:].any()  # lateral body: 1 mm only
    wide = _fluid(sa, sb, LEVELS, dataclasses.replace(s, fluid_body_midline_mm=0.0), SPACING, x)
    assert wide[80:110, 77:82].all()  # 0: bodies anywhere, as before


def _joint_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two mixed-marrow bones meeting at a joint: two 2 mm cortical lines (dark on both images), 3 mm
    of cartilage between them (T1 a little above muscle, STIR 2x muscle), one line broken every 12 mm
    (partial volume where the slice grazes it). Muscle inside subcutaneous fat; 1 mm pixels, 4 mm slices."""
    shape = (160, 160, 6)
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    body = ((ii - 80) / 76) ** 2 + ((jj - 80) / 70) ** 2 < 1
    inner = ((ii - 80) / 66) ** 2 + ((jj - 80) / 60) ** 2 < 1
    t1 = np.where(body, 1500.0, 0.0)
    st = np.where(body, 100.0, 0.0)
    t1[inner], st[inner] = 400.0, 300.0
    rows = np.abs(jj - 80) < 25
    gap = rows & (ii >= 79) & (ii < 82)
    cortex = rows & (((ii >= 77) & (ii < 79)) | ((ii >= 82) & (ii < 84))) & ~((jj % 12 == 0) & (ii < 79))
    bone = rows & (ii >= 45) & (ii <= 115) & ~gap & ~cortex
    t1[bone], st[bone] = 800.0, 250.0
    t1[cortex], st[cortex] = 100.0, 50.0
    t1[gap], st[gap] = 500.0, 600.0
    rng = np.random.default_rng(0)
    t1 = np.abs(t1 + rng.normal(0, 15, t1.shape) * body)
    st = np.abs(st + rng.normal(0, 10, st.shape) * body)
    rep = lambda a: np.repeat(a[:, :, None], shape[2], axis=2)  # noqa: E731
    return rep(t1).astype(np.float32), rep(st).astype(np.float32), rep(gap), rep(bone)


def test_joint_closing_keeps_the_joint_space_out_of_the_marrow() -> None:
    """Where one cortical line has gaps, the band reaches the cartilage between the two lines; closing
    the sheets (``joint_close_mm``) makes the joint space part of the joint, not of the marrow."""
    t1, st, gap, bone = _joint_scene()
    g = Geometry(t1.shape, (1.0, 1.0, 4.0), (0.0, 0.0, 0.0), np.eye(3))
    s = load_settings("sij").marrow
    assert s.joint_close_mm > 0
    open_joint = find_marrow(Volume(t1, g), Volume(st, g), dataclasses.replace(s, joint_close_mm=0.0))
    closed = find_marrow(Volume(t1, g), Volume(st, g), s)
    assert open_joint.mask[gap].mean() > 0.5
    assert closed.mask[gap].mean() < 0.3
    # the subchondral marrow on both sides is kept as before
    assert closed.mask[bone].mean() > 0.2
    assert abs(closed.mask[bone].mean() - open_joint.mask[bone].mean()) < 0.01


def test_no_joint_cortex_no_band_and_the_pipeline_says_so(tmp_path: Path) -> None:
    """Without any joint cortex the periarticular search has nothing to search beside: no marrow at all
    (it once put a band on the first slice, measured from an edge the distance transform assumed there),
    and ``run_study`` warns that a BME volume of 0 means nothing was searched."""
    from bmeseg.io.nifti import write_nifti
    from bmeseg.pipeline import StudyInput, run_study

    t1, st, _, _ = _joint_scene()
    lines = (t1 < 250) & (st < 150) & (t1 > 0)
    t1[lines], st[lines] = 800.0, 250.0  # the cortical lines become marrow: nothing is dark on both
    g = Geometry(t1.shape, (1.0, 1.0, 4.0), (0.0, 0.0, 0.0), np.eye(3))
    s = load_settings("sij")
    res = find_marrow(Volume(t1, g), Volume(st, g), s.marrow)
    assert res.levels["joint_cortex_ml"] == 0.0
    assert not res.mask.any()
    write_nifti(Volume(t1, g), tmp_path / "t1.nii.gz")
    write_nifti(Volume(st, g), tmp_path / "stir.nii.gz")
    s = dataclasses.replace(s, registration=dataclasses.replace(s.registration, enabled=False))
    out = run_study(StudyInput(t1=str(tmp_path / "t1.nii.gz"), stir=str(tmp_path / "stir.nii.gz")), None, settings=s)
    assert out.measurements.bme_volume_ml == 0.0
    assert any("no marrow found" in w and "joint cortex" in w and "--pipeline sij" in w for w in out.warnings)



def test_split_necks_cuts_a_dumbbell_and_leaves_a_ball() -> None:
    from bmeseg.marrow import _split_necks

    ii, jj, kk = np.meshgrid(np.arange(60), np.arange(30), np.arange(12), indexing="ij")
    r2 = ((jj - 15) ** 2 + ((kk - 6) * 2) ** 2)
    left = (ii - 15) ** 2 + r2 < 100
    right = (ii - 45) ** 2 + r2 < 100
    neck = (ii > 15) & (ii < 45) & (abs(jj - 15) <= 1) & (kk == 6)  # 3 voxels wide, one slice
    pieces = np.where(left | right | neck, 1, 0).astype(np.int32)
    spacing = (1.0, 1.0, 2.0)
    out, n = _split_necks(pieces, np.array([1]), 1, 2.0, spacing)
    assert n == 2
    assert np.unique(out[left]).size == 1 and np.unique(out[right]).size == 1
    assert out[left][0] != out[right][0]
    assert np.array_equal(out > 0, pieces > 0)  # nothing lost, only relabelled
    ball = np.where(left, 1, 0).astype(np.int32)
    out2, n2 = _split_necks(ball, np.array([1]), 1, 2.0, spacing)
    assert n2 == 1 and np.array_equal(out2, ball)



def test_the_plate_under_a_lesion_is_a_wall_on_pd_fs() -> None:
    """Between its cartilage and a lesion the plate is dark on T1 with no bright side for the top-hat,
    and on PD-FS no darker than the suppressed fat (at the noise floor): only "a STIR valley that is
    dark on T1 too" sees it. Neither the lesion, the cartilage nor the fat becomes wall."""
    from bmeseg.marrow import _cortex_walls

    rng = np.random.default_rng(4)
    shape, spacing = (90, 60, 4), (0.8, 0.8, 3.0)
    ii = np.arange(shape[0])[:, None, None] * np.ones(shape)
    muscle, fat, cartilage = ii < 25, (ii >= 25) & (ii < 46), (ii >= 46) & (ii < 50)
    plate, lesion = (ii >= 50) & (ii <= 52), ii > 52
    tissues = [muscle, fat, cartilage, plate, lesion]
    a = np.select(tissues, [400.0, 900.0, 450.0, 330.0, 360.0])  # T1, the plate as blurred across planes
    b = np.select(tissues, [300.0, 45.0, 250.0, 30.0, 400.0])  # PD-FS
    a = (a + rng.normal(0, 17, shape)).astype(np.float32)
    b = np.abs(b + rng.normal(0, 17, shape)).astype(np.float32)
    sb = ndi.gaussian_filter(b, (0.6, 0.6, 0)).astype(np.float32)
    body, cover = np.ones(shape, bool), np.ones(shape, bool)
    t_lo, t_hi = (float(v) for v in np.percentile(a, [20.0, 97.0]))
    base = load_settings("knee").marrow
    walls = {}
    for level in (0.0, 1.0):
        s = dataclasses.replace(base, wall_valley_t1_level=level, wall_closing_mm=0.0)
        walls[level] = _cortex_walls(a, b, sb, body, cover, fat & (a > 650), spacing, s, {"t1_high": t_hi},
                                     t_lo, 150.0)
    row = plate & (np.arange(shape[1])[None, :, None] > 3) & (np.arange(shape[1])[None, :, None] < 56)
    assert walls[0.0][row].mean() < 0.5  # open: the bone's outline leaks here
    assert walls[1.0][row].mean() > 0.9
    inner = (ii > 56) | ((ii > 28) & (ii < 43)) | ((ii > 46) & (ii < 49))
    assert walls[1.0][inner].mean() < 0.02


@pytest.mark.parametrize("bridge", [False, True])
def test_lesion_reach_stays_inside_its_own_cortex(bridge: bool) -> None:
    from bmeseg.marrow import _lesion_reach

    ii, jj = np.meshgrid(np.arange(80), np.arange(100), indexing="ij")
    ra = np.hypot(ii - 40, jj - 28)  # bone A, centre (40, 28), radius 20
    rb = np.hypot(ii - 40, jj - 72)  # bone B below it, 4 voxels of joint space between the rings
    wall2 = ((ra >= 17) & (ra < 20)) | ((rb >= 17) & (rb < 20))
    if bridge:  # a dark line across the joint (meniscus) joins the two cortices into one arc
        wall2 |= (abs(ii - 40) <= 1) & (jj >= 46) & (jj <= 54)
    bones2 = np.zeros(ii.shape, np.int32)
    bones2[(ra < 17) & (ii < 40)] = 1  # A's fat: its +i half is a lesion that replaced the fat
    bones2[rb < 17] = 2
    bones = np.repeat(bones2[:, :, None], 3, axis=2)
    wall = np.repeat(wall2[:, :, None], 3, axis=2)
    reach = _lesion_reach(bones, wall, (1.0, 1.0, 3.0), 25.0, 6.0)[:, :, 1]
    # the bridge is split half-way between the bones: A still owns its ring; of the joint space, at
    # most the corner beside A's half of the bridge (its hull), never beyond the bridge's reach
    joint = reach & (ra > 21) & (rb > 21)
    assert not joint.any() if not bridge else (joint.sum() <= 10 and np.all(abs(ii[joint] - 40) <= 3))
    assert not reach[wall2].any() and not reach[bones2 > 0].any()
    assert reach[(ra < 16) & (ii > 41)].mean() > 0.95  # A's interior that its fat missed


@pytest.mark.parametrize("lr_axis", [0, 1])
def test_split_joint_sides_cuts_a_band_that_runs_across_a_faint_joint(lr_axis: int) -> None:
    from bmeseg.marrow import _lr_offset_mm, _split_joint_sides

    # sacrum |x| < 35 mm, ilia 35-110 mm either side; the band is one piece (the joints were not found
    # as cortex) but the T1 is darker along the joint lines at |x| = 35 mm (off the seeds' midpoint, 45)
    n = 240
    x = (np.arange(n) - (n - 1) / 2) * 1.0
    xx = np.broadcast_to(x[:, None, None], (n, 60, 4)) if lr_axis == 0 else np.broadcast_to(x[None, :, None], (60, n, 4))
    shape = xx.shape
    body = np.ones(shape, bool)
    band = np.abs(xx) < 110
    t1 = np.where(np.abs(np.abs(xx) - 35) < 1.5, 200.0, 800.0).astype(np.float32)
    bones = band.astype(np.int32)
    sheets = np.abs(np.abs(xx) - 35) < 1.0
    mid = _lr_offset_mm(body, (1.0, 1.0, 3.0), lr_axis)
    out = _split_joint_sides(bones, t1, mid, sheets, (1.0, 1.0, 3.0), lr_axis, 15.0, 75.0)
    assert np.array_equal(out > 0, band)  # relabelled only
    sac, left, right = out[np.abs(xx) < 33], out[band & (xx > 37)], out[band & (xx < -37)]
    assert np.all(sac == 1) and np.all(left == 2) and np.all(right == 3)
    # without a seed on each side (a narrow field of view) the labels stay as they were
    narrow = (np.abs(xx) < 60).astype(np.int32)
    no_lines = np.zeros_like(sheets)
    assert np.array_equal(_split_joint_sides(narrow, t1, mid, no_lines, (1.0, 1.0, 3.0), lr_axis, 15.0, 75.0),
                          narrow)
    # the band only a strip either side of each joint line (the middle of the sacrum not in it), the
    # ilia reaching beyond 75 mm on a few rows: the strip medial of a line is sacrum, lateral ilium
    jj = np.broadcast_to(np.arange(shape[1 - lr_axis]).reshape((1, -1, 1) if lr_axis == 0 else (-1, 1, 1)), shape)
    strips = ((np.abs(xx) >= 20) & (np.abs(xx) <= 50)) | ((np.abs(xx) < 110) & (np.abs(xx) > 50) & (jj < 5))
    out = _split_joint_sides(strips.astype(np.int32), t1, mid, sheets, (1.0, 1.0, 3.0), lr_axis, 15.0, 75.0)
    assert np.all(out[strips & (np.abs(xx) < 33)] == 1)
    assert np.all(out[strips & (xx > 37)] == 2) and np.all(out[strips & (xx < -37)] == 3)


def test_joint_valley_finds_a_faint_joint_line_and_not_the_outer_cortex_or_a_foramen() -> None:
    """A joint line only 0.8x muscle on T1 (above ``cortex_t1_level``) is a T1 valley between marrow on
    both sides: ``_valley_sheets`` finds it. The outer cortex of the ilium (muscle lateral of it) and a
    dark line at the body's middle (a sacral foramen) are valleys too, and are not joint lines."""
    from bmeseg.marrow import _lr_offset_mm, _valley_sheets

    n = 240
    x = np.broadcast_to(((np.arange(n) - (n - 1) / 2) * 1.0)[:, None, None], (n, 60, 4))
    t1 = np.where(np.abs(x) < 80, 700.0, 400.0).astype(np.float32)  # sacrum and ilia; muscle beyond
    joint = np.abs(np.abs(x) - 35) < 1.5
    t1[joint] = 330.0  # 0.83x muscle: the cortex rule (< 0.7x) misses it
    outer = (np.abs(x) >= 80) & (np.abs(x) < 82)
    t1[outer] = 200.0
    foramen = np.abs(x) < 1.5
    t1[foramen] = 300.0
    s = dataclasses.replace(load_settings("sij").marrow, joint_valley_mm=3.0)
    assert s.cortex_t1_level * LEVELS["muscle_t1"] < 330.0
    everywhere = np.ones(t1.shape, bool)
    mid = _lr_offset_mm(everywhere, (1.0, 1.0, 3.3), 0)
    sheets = _valley_sheets(t1, mid, everywhere, LEVELS, (1.0, 1.0, 3.3), 0.0033, s, 0)
    assert sheets[joint].mean() > 0.9
    assert sheets[joint & (x > 0)].any() and sheets[joint & (x < 0)].any()  # both joints
    assert not sheets[outer].any() and not sheets[foramen].any()
    assert not sheets[~joint].any()
    # marrow-like T1 on one side only (the other side muscle): not a joint
    one_sided = t1.copy()
    one_sided[(x > 36) & (x < 80)] = 400.0
    sheets = _valley_sheets(one_sided, mid, everywhere, LEVELS, (1.0, 1.0, 3.3), 0.0033, s, 0)
    assert not sheets[joint & (x > 0)].any() and sheets[joint & (x < 0)].mean() > 0.9


def _deep_scene() -> tuple[np.ndarray, ...]:
    """Sacrum and ilia of mixed marrow (T1 700, STIR 360) in muscle, 1 mm pixels: two sacroiliac joint
    lines 45 mm either side of the middle and a lumbosacral endplate across the middle (2 mm, dark on
    both). A lesion runs from the right joint line 18 mm into the ilium, another from the endplate
    18 mm into the sacrum (T1 as muscle, STIR 2.5x muscle: below the fluid level)."""
    shape = (240, 120, 4)
    x = np.broadcast_to((np.arange(shape[0]) - 119.5)[:, None, None], shape)
    y = np.broadcast_to(np.arange(shape[1])[None, :, None], shape)
    t1 = np.full(shape, 400.0, np.float32)
    st = np.full(shape, 300.0, np.float32)
    bone = (np.abs(x) < 90) & (y >= 20) & (y < 100)
    t1[bone], st[bone] = 700.0, 360.0
    line = bone & (np.abs(np.abs(x) - 45) < 1) & (y >= 25) & (y < 95)
    plate = bone & (np.abs(x) < 25) & (y >= 38) & (y < 40)
    t1[line | plate], st[line | plate] = 100.0, 50.0
    iliac = bone & (x >= 46) & (x < 64) & (y >= 55) & (y < 65)
    sacral = bone & (np.abs(x) < 5) & (y >= 40) & (y < 58)
    t1[iliac | sacral], st[iliac | sacral] = 400.0, 750.0
    return t1, st, x, y, iliac, sacral


def test_a_deep_lesion_grows_from_the_joint_band_into_the_reach() -> None:
    """The sij search's ``lesion_reach_mm``: a lesion seeded in the subchondral band runs on into the
    marrow up to ``band_mm + lesion_reach_mm`` from a sacroiliac joint line (SPARCC "deep" BME), not
    from the lumbosacral endplate; without the reach the lesion is cut at ``band_mm``."""
    from bmeseg.edema import detect_edema
    from bmeseg.marrow import _periarticular

    t1, st, x, y, iliac, sacral = _deep_scene()
    g = Geometry(t1.shape, (1.0, 1.0, 3.3), (0.0, 0.0, 0.0), np.eye(3))
    body = np.zeros(t1.shape, bool)
    body[5:-5, 5:-5] = True
    cover = np.ones(t1.shape, bool)
    s = load_settings("sij")
    assert s.marrow.lesion_reach_mm > 0 and s.lesions.min_marrow_ml > 0
    # a 4-slice scene: every lesion lies half on the stack's outermost slices (a 16-25 slice SIJ stack is
    # what lesions.stack_edge_max_share is set for)
    s = dataclasses.replace(s, lesions=dataclasses.replace(s.lesions, stack_edge_max_share=1.0))
    res = {}
    for reach_mm in (0.0, s.marrow.lesion_reach_mm):
        m = _periarticular(t1, st, body, cover, (1.0, 1.0, 3.3), 0.0033,
                           dataclasses.replace(s.marrow, lesion_reach_mm=reach_mm, edge_reach_mm=0.0), dict(LEVELS),
                           lr_axis=0)
        res[reach_mm] = (m, detect_edema(Volume(t1, g), Volume(st, g), m, s.edema, s.lesions).mask)
    (m0, bme0), (m1, bme1) = res[0.0], res[s.marrow.lesion_reach_mm]
    assert m0.reach is None and m1.reach is not None
    depth = x - 46.5  # mm from the right joint line's inner edge
    # without the reach the iliac lesion stops at the band; with it, it is found to its deep end
    assert bme0[iliac & (depth < 8)].mean() > 0.9 and not bme0[iliac & (depth > 12)].any()
    assert bme1[iliac].mean() > 0.95
    # the endplate lesion keeps to the band either way: the reach starts at the joint lines only
    assert not m1.reach[sacral].any()
    assert np.array_equal(bme0[sacral], bme1[sacral]) and bme1[sacral & (y < 46)].mean() > 0.9
    # nothing beyond the two lesions' 1 mm smoothing rim
    rim = ndi.binary_dilation(iliac | sacral, structure=np.ones((5, 5, 1), bool))
    assert not (bme1 & ~rim).any()


def _edge_scene() -> tuple[np.ndarray, ...]:
    """``_deep_scene``'s bones with a lesion at the right ilium's lower edge, from the joint line to the
    bone's outline (a 12 mm disc cut by it: T1 as muscle, STIR 2x muscle), and a vein (STIR 5x muscle)
    just below the left ilium; 1 mm in-plane smoothing gives both a partial-volume rim."""
    t1, st, x, y, _, _ = _deep_scene()
    bone = (np.abs(x) < 90) & (y >= 20) & (y < 100)
    t1[:], st[:] = 400.0, 300.0
    t1[bone], st[bone] = 700.0, 360.0
    line = bone & (np.abs(np.abs(x) - 45) < 1) & (y >= 25) & (y < 95)
    t1[line], st[line] = 100.0, 50.0
    lesion = bone & (np.hypot(x - 58, y - 31) < 12) & ~line
    t1[lesion], st[lesion] = 400.0, 600.0
    vein = (np.abs(x + 60) < 2) & (y >= 14) & (y < 18)
    t1[vein], st[vein] = 300.0, 1500.0
    sig = (1.0, 1.0, 0.0)
    return ndi.gaussian_filter(t1, sig), ndi.gaussian_filter(st, sig), bone, lesion, vein


def test_edge_reach_takes_bme_up_to_the_bone_outline_and_not_a_vein_beside_it() -> None:
    """``edge_reach_mm``: where BME replaced the marrow up to the bone's outline, the marrow ground (T1
    between muscle and fat, closed over lesions it encloses) stops short of it. The edge is the off-ground
    voxels with lesion-like signal within edge_reach_mm of the ground near a joint line; a vein beside
    the bone and its partial-volume rim are not part of it, nor is muscle."""
    from bmeseg.marrow import _periarticular

    t1, st, bone, lesion, vein = _edge_scene()
    body = np.zeros(t1.shape, bool)
    body[5:-5, 5:-5] = True
    s = load_settings("sij").marrow
    assert s.edge_reach_mm > 0 and s.edge_vessel_mm > 0
    off = _periarticular(t1, st, body, np.ones(t1.shape, bool), (1.0, 1.0, 3.3), 0.0033,
                         dataclasses.replace(s, edge_reach_mm=0.0), dict(LEVELS), lr_axis=0)
    on = _periarticular(t1, st, body, np.ones(t1.shape, bool), (1.0, 1.0, 3.3), 0.0033, s, dict(LEVELS), lr_axis=0)
    assert off.edge is None and on.edge is not None and on.reach is not None
    assert np.array_equal(off.bones, on.bones)  # the marrow itself is the same
    assert on.mask[lesion].mean() < 0.1  # the ground misses the lesion at the bone's outline...
    # ... the edge takes it, up to 8 mm from the ground (the disc's lowest part lies farther)
    assert on.edge[lesion].mean() > 0.4 and not (on.edge & on.mask).any()
    assert (on.edge <= on.reach).all()
    # the vein's partial-volume rim bright enough to pass the BME rule (1.3x the marrow's STIR of 360)
    rim = ndi.binary_dilation(vein, np.ones((7, 7, 1), bool)) & ~vein & (st > 1.3 * 360.0)
    assert rim.sum() > 20 and not on.edge[rim].any()
    # muscle is not lesion-like; off the bone only the vein's faint outer rim is, too faint for the rule
    stray = on.edge & ~bone & ~ndi.binary_dilation(lesion, np.ones((5, 5, 1), bool))
    assert (st[stray] < 1.3 * 360.0).all() and stray.sum() < 60


def test_a_lesion_keeps_its_edge_part_only_while_it_is_mostly_marrow() -> None:
    """In the edge, a lesion grows only where the BME rule holds (not down to hysteresis' 0.6 margin), and
    keeps that part only while it is at most ``edema.edge_max_share`` of the lesion: BME at the outer
    cortex is mostly marrow, a bright vessel grazed by a speck of marrow is mostly outside it."""
    from bmeseg.edema import detect_edema, limit_edge
    from bmeseg.marrow import MarrowResult

    shape = (80, 80, 4)
    g = Geometry(shape, (1.0, 1.0, 3.3), (0.0, 0.0, 0.0), np.eye(3))
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = np.hypot(ii - 25, jj - 30)
    bone2 = (jj >= 30) & (ii >= 10) & (ii < 70)
    edge2 = (jj >= 22) & (jj < 30) & (ii >= 10) & (ii < 70)  # 8 mm off the marrow's lower side
    # a lesion in the marrow that reaches 7 mm into the edge (a quarter of it there)
    lesion2 = ((r < 8) & (bone2 | edge2)) | (bone2 & (np.abs(ii - 25) < 8) & (jj < 45))
    faint2 = edge2 & (r >= 8) & (r < 14)
    speck2 = bone2 & (np.abs(ii - 55) < 2) & (jj < 32)  # 2 mm of lesion-like marrow ...
    vessel2 = edge2 & (np.abs(ii - 55) < 6)  # ... touching a bright structure in the edge
    t1 = np.full(shape, 400.0, np.float32)
    st = np.full(shape, 300.0, np.float32)
    t1[bone2], st[bone2] = 1000.0, 330.0  # marrow: STIR 1.1x muscle, as sacral marrow
    # lesion 1.5x marrow on STIR; its faint rim 1.27x: within half the lesion's own contrast (pv_fraction),
    # between hysteresis' low margin (1.18x) and the rule (1.3x)
    for m2, (a, b) in ((lesion2, (500.0, 495.0)), (faint2, (700.0, 419.0)), (speck2, (500.0, 495.0)),
                       (vessel2, (500.0, 495.0))):
        t1[m2], st[m2] = a, b
    rep = lambda m2: np.repeat(m2[:, :, None], shape[2], axis=2)  # noqa: E731
    bones = rep(bone2).astype(np.int32)
    marrow = MarrowResult(bones, rep(bone2 & ~lesion2 & ~speck2), {"muscle_t1": 400.0, "muscle_stir": 300.0},
                          reach=rep(edge2), edge=rep(edge2))
    s = load_settings("sij")
    s = dataclasses.replace(s, lesions=dataclasses.replace(s.lesions, stack_edge_max_share=1.0))  # 4 slices
    bme = detect_edema(Volume(t1, g), Volume(st, g), marrow, s.edema, s.lesions).mask
    les, vessel = rep(lesion2), rep(vessel2)
    faint = rep(faint2 & (r >= 9.5) & (r < 12.5) & (jj >= 24))  # clear of the smoothing with lesion and muscle
    assert bme[les].mean() > 0.95  # its marrow part and its edge part
    assert not bme[faint].any()  # the faint rim in the edge fails the rule itself...
    as_reach = detect_edema(Volume(t1, g), Volume(st, g), dataclasses.replace(marrow, edge=None), s.edema,
                            s.lesions).mask
    assert as_reach[faint].mean() > 0.5  # ... while hysteresis takes most of it into a plain reach
    assert not bme[vessel].any()  # the vessel is 90 % of its "lesion": dropped
    # limit_edge alone: the share decides
    m = les | vessel | rep(speck2)
    kept = limit_edge(m, rep(edge2), 0.5, 26)
    assert kept[les].all() and not kept[vessel].any() and kept[rep(speck2)].all()
    assert limit_edge(m, rep(edge2), 1.0, 26)[vessel].all()


def test_a_marrow_like_piece_lying_in_fat_is_not_bone() -> None:
    """A bowel loop (marrow-like T1, a gas bubble in it) in fat is dropped from the band; a bone piece
    inside its 1.8 mm cortex is kept, even with fat beyond the cortex on half its outline."""
    ii, jj = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    t1 = np.full(SHAPE, 400.0, np.float32)
    st = np.full(SHAPE, 300.0, np.float32)
    r_bone, r_bowel = np.hypot(ii - 40, jj - 40), np.hypot(ii - 90, jj - 85)
    fat2 = ((r_bone >= 28) & (r_bone < 40) & (jj > 40)) | (r_bowel < 20)
    t1[fat2], st[fat2] = 1500.0, 100.0
    t1[r_bone < 28], st[r_bone < 28] = 150.0, 100.0  # cortex, 3 px = 1.8 mm
    marrow2 = r_bone < 25
    t1[marrow2], st[marrow2] = 700.0, 330.0
    bowel2 = r_bowel < 11
    t1[bowel2], st[bowel2] = 700.0, 400.0
    gas2 = r_bowel < 3
    t1[gas2], st[gas2] = 40.0, 20.0
    rep = lambda a: np.repeat(a[:, :, None], SHAPE[2], axis=2)  # noqa: E731
    band = rep(marrow2 | (bowel2 & ~gas2))
    s = load_settings("sij").marrow
    assert s.ground_fat_ring_max < 1
    drop = _fat_ringed(band, t1, st, np.ones(SHAPE, bool), LEVELS, SPACING, s)
    assert drop[rep(bowel2 & ~gas2)].all()
    assert not drop[rep(marrow2)].any()
    # the rule's limit: the same bone with a 1.2 mm cortex and fat right beyond it on half its outline
    # has about a sixth of its 2 mm ring in fat, so it is dropped at a share of 0.1 (kept at 0.3)
    t1[(r_bone >= 27) & (r_bone < 28) & (jj > 40)] = 1500.0
    st[(r_bone >= 27) & (r_bone < 28) & (jj > 40)] = 100.0
    band = rep(marrow2)
    assert _fat_ringed(band, t1, st, np.ones(SHAPE, bool), LEVELS, SPACING, s)[band].all()
    loose = dataclasses.replace(s, ground_fat_ring_max=0.3)
    assert not _fat_ringed(band, t1, st, np.ones(SHAPE, bool), LEVELS, SPACING, loose).any()
