"""The radius-independent ball morphology of bmeseg._morph equals scipy's with ball() elements, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from bmeseg import _morph
from bmeseg._morph import (
    _sections,
    ball,
    close_ball,
    dilate_ball,
    dilate_in_box,
    edt,
    erode_ball,
    hysteresis_threshold,
    in_plane_spacing,
    open_ball,
    within_in_plane,
)

SPACINGS = [
    (1.0, 1.0, 1.0),  # exact ties: offsets at exactly the radius
    (0.5, 0.5, 3.0),
    (0.546875, 0.546875, 3.85),
    (0.7291667, 0.7291667, 4.4),
    (1.0, 1.2, 3.0),
    (0.3, 0.31, 0.9),  # several slices of reach
    (2.0, 0.5, 0.75),
]
RADII = [0.2, 1.0, 1.5, 1.6, 2.0, 3.0, 5.0]


def _masks(shape: tuple[int, int, int], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    blobs = ndi.gaussian_filter(rng.random(shape), (2.0, 2.0, 1.0)) > 0.5
    sparse = rng.random(shape) > 0.985
    edge = np.zeros(shape, bool)
    edge[:3, :, :] = True  # touching the border
    edge[:, -1, 2] = True
    holes = ~(rng.random(shape) > 0.97)  # mostly set, with holes
    one = np.zeros(shape, bool)
    one[shape[0] // 2, 0, shape[2] - 1] = True
    return [blobs, sparse, edge, holes, one, np.zeros(shape, bool), np.ones(shape, bool)]


OPS = {
    "dilate": (dilate_ball, ndi.binary_dilation),
    "erode": (erode_ball, ndi.binary_erosion),
    "close": (close_ball, ndi.binary_closing),
    "open": (open_ball, ndi.binary_opening),
}


@pytest.fixture(params=["edt", "rows"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways _morph dilates (per-slice distance transforms, per-slice row distances), whatever its cost model says."""
    monkeypatch.setattr(_morph, "_rows_are_cheaper", lambda *a: request.param == "rows")
    return str(request.param)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("op", list(OPS))
def test_ball_ops_equal_scipy(spacing: tuple[float, float, float], op: str, engine: str) -> None:
    fast, ref = OPS[op]
    for seed, shape in enumerate([(23, 19, 7), (30, 26, 5)]):
        for mask in _masks(shape, seed):
            for radius in RADII:
                if radius / min(spacing) > 10:  # scipy's own cost grows with the element: keep the test quick
                    continue
                for border_value in (0, 1):
                    se = ball(radius, spacing)
                    want = ref(mask, structure=se, border_value=border_value)
                    got = fast(mask, radius, spacing, border_value=border_value)
                    assert got.dtype == np.bool_ and got.shape == mask.shape
                    assert np.array_equal(got, want), (op, spacing, radius, border_value, seed)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_in_plane_discs_and_other_axes(axis: int, engine: str) -> None:
    """_disc-style elements (a huge spacing on the slice axis) and slices along any axis."""
    mask = _masks((21, 18, 16), 5)[0]
    for spacing in [(0.5, 0.6, 0.7), (3.3, 0.45, 0.45)]:
        for radius in (1.0, 2.5, 4.0):
            sp = in_plane_spacing(spacing, axis)
            for fast, ref in OPS.values():
                for bv in (0, 1):
                    want = ref(mask, structure=ball(radius, sp), border_value=bv)
                    assert np.array_equal(fast(mask, radius, sp, border_value=bv, axis=axis), want)
                    # the same ball, cut in slices along another axis
                    want = ref(mask, structure=ball(radius, spacing), border_value=bv)
                    assert np.array_equal(fast(mask, radius, spacing, border_value=bv, axis=axis), want)


def test_large_radius_on_a_body_like_mask(engine: str) -> None:
    """The sizes of the marrow search: a 6 mm erosion of a body outline at 0.55 mm pixels."""
    zz, yy, _ = np.meshgrid(np.arange(60), np.arange(64), np.arange(9), indexing="ij")
    body = ((zz - 30) / 26.0) ** 2 + ((yy - 36) / 30.0) ** 2 < 1.0  # cut by the array edge
    spacing = (0.546875, 0.546875, 3.85)
    for bv in (0, 1):
        want = ndi.binary_erosion(body, structure=ball(6.0, spacing), border_value=bv)
        assert np.array_equal(erode_ball(body, 6.0, spacing, border_value=bv), want)
        want = ndi.binary_closing(body, structure=ball(5.0, spacing), border_value=bv)
        assert np.array_equal(close_ball(body, 5.0, spacing, border_value=bv), want)


def test_fast_path_is_taken() -> None:
    """No rounding ties on these grids: the distance-transform path (not scipy's fallback) did the work above."""
    for spacing in SPACINGS:
        for radius in (*RADII, 6.0, 20.0):
            for axis in (0, 1, 2):
                assert _sections(radius, spacing, axis) is not None
                assert _sections(radius, in_plane_spacing(spacing, axis), axis) is not None


@pytest.mark.parametrize("spacing", [(0.546875, 0.546875, 3.85), (0.7291667, 0.6, 4.4), (1.0, 1.0, 1.0)])
def test_edt_equals_scipy(spacing: tuple[float, float, float]) -> None:
    for mask in _masks((31, 27, 9), 3)[:5]:
        x = ~mask
        if x.all():
            continue
        want = ndi.distance_transform_edt(x, sampling=spacing)
        got = edt(x, spacing)
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_within_in_plane_equals_a_3d_transform() -> None:
    """_periarticular's band: in-plane distance to the joint sheets, slice by slice."""
    for mask in _masks((33, 29, 8), 4)[:5]:
        if not mask.any():
            continue
        for spacing in [(0.7291667, 0.7291667, 4.4), (0.55, 0.6, 3.3)]:
            for dist in (1.0, 2.2, 20.0):
                d3 = ndi.distance_transform_edt(~mask, sampling=in_plane_spacing(spacing))
                assert np.array_equal(within_in_plane(mask, dist, spacing), d3 <= dist)


def test_boxed_dilation_and_hysteresis_equal_the_full_ones() -> None:
    from skimage.filters import apply_hysteresis_threshold

    rng = np.random.default_rng(9)
    for shape in [(30, 26, 9), (12, 40, 7)]:
        score = ndi.gaussian_filter(rng.normal(size=shape), 1.5) * 4.0
        score[:, :3, :] = 2.0  # a component touching the border
        for low, high in [(0.6, 1.0), (1.2, 0.8)]:
            assert np.array_equal(hysteresis_threshold(score, low, high), apply_hysteresis_threshold(score, low, high))
        for mask in [*_masks(shape, 2)[:5], score > 1.0]:
            for it in (1, 2):
                assert np.array_equal(dilate_in_box(mask, iterations=it), ndi.binary_dilation(mask, iterations=it))
    assert not hysteresis_threshold(np.zeros((4, 4, 4)), 0.6, 1.0).any()


def test_hysteresis_seeds_only_start_components() -> None:
    """With ``seeds``, a component needs a strong voxel inside them; strong voxels outside only join."""
    score = np.zeros((12, 6, 3))
    score[1:5, 1:4, 1] = 0.8  # component A: its strong voxel is a seed
    score[2, 2, 1] = 2.0
    score[4, 2, 1] = 2.0  # strong, but outside the seeds: joins A
    score[7:11, 1:4, 1] = 0.8  # component B: strong only outside the seeds
    score[8, 2, 1] = 2.0
    seeds = np.zeros(score.shape, bool)
    seeds[:4] = True
    out = hysteresis_threshold(score, 0.6, 1.0, seeds=seeds)
    assert out[1:5, 1:4, 1].all() and not out[7:, :, :].any() and int(out.sum()) == 12
    # without seeds: both, as skimage
    assert np.array_equal(hysteresis_threshold(score, 0.6, 1.0), score > 0.6)
