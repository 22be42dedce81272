"""Tests of bmeseg.register on a seeded synthetic phantom with a known motion.

Motion convention used throughout: the T1 is acquired after the patient moved by
the rigid map ``M`` (world LPS -> world LPS): anatomy that sat at ``p`` during
the STIR sits at ``M(p)`` during the T1. The T1 voxel at world point ``x``
therefore shows the phantom at ``M^-1(x)``, and the STIR voxel at ``y`` shows the
phantom at ``y``. The same anatomy is seen at STIR point ``y`` and T1 point
``M(y)``, so the registration transform (fixed = STIR point -> moving = T1 point)
must equal ``M``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from numpy.typing import NDArray
from scipy import ndimage

from bmeseg.errors import ConfigError
from bmeseg.register import (
    RegistrationResult,
    RegistrationSettings,
    RegistrationStatus,
    register_rigid,
    resample_to,
)
from bmeseg.volume import Geometry, Volume

# ----------------------------------------------------------------------------- phantom

_PH_HALF = 70.0  # phantom cube: [-70, 70] mm on each LPS axis
_PH_STEP = 1.0

# tissue labels and two different (non-monotonic) contrast lookups, so only MI can match them
_STIR_LUT = np.array([0.0, 0.35, 0.05, 0.12, 1.0, 0.08, 0.6], dtype=np.float32)
_T1_LUT = np.array([0.0, 0.45, 0.05, 0.95, 0.2, 1.0, 0.3], dtype=np.float32)


def _rot(axis: int, deg: float) -> NDArray[np.float64]:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


@dataclass(frozen=True)
class _Phantom:
    labels: NDArray[np.uint8]  # on the fine grid, [L, P, S] index order
    texture: NDArray[np.float32]  # smooth multiplicative texture that moves with the anatomy


def _make_phantom(seed: int = 1) -> _Phantom:
    rng = np.random.default_rng(seed)
    ax = np.arange(-_PH_HALF, _PH_HALF + _PH_STEP / 2, _PH_STEP, dtype=np.float32)
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1)  # (n, n, n, 3) LPS
    labels = np.zeros(grid.shape[:3], dtype=np.uint8)

    def ellipsoid(center: tuple[float, float, float], radii: tuple[float, float, float],
                  rot: NDArray[np.float64] | None = None) -> NDArray[np.bool_]:
        q = grid - np.asarray(center, dtype=np.float32)
        if rot is not None:
            q = q @ rot.astype(np.float32)  # rot.T applied to each point
        return np.sum((q / np.asarray(radii, dtype=np.float32)) ** 2, axis=-1) <= 1.0

    # 1 soft tissue (limb), 5 subcutaneous fat, 2 cortex, 3 marrow, 4 fluid, 6 muscle-like compartments
    labels[ellipsoid((0, 0, 0), (52, 45, 68), _rot(2, 10))] = 5
    labels[ellipsoid((0, 0, 0), (46, 39, 66), _rot(2, 10))] = 1
    labels[ellipsoid((-14, 12, 5), (18, 14, 40), _rot(0, 8) @ _rot(1, -6))] = 6
    labels[ellipsoid((16, -8, -10), (12, 16, 30), _rot(1, 12))] = 6
    labels[ellipsoid((4, -2, 30), (20, 17, 40), _rot(0, -5))] = 2  # "femur"
    labels[ellipsoid((4, -2, 30), (16, 13, 37), _rot(0, -5))] = 3
    labels[ellipsoid((-3, 3, -34), (18, 16, 34), _rot(1, 7))] = 2  # "tibia"
    labels[ellipsoid((-3, 3, -34), (14, 12, 31), _rot(1, 7))] = 3
    labels[ellipsoid((22, 14, -25), (6, 9, 12), _rot(2, 30))] = 2  # "fibula"
    labels[ellipsoid((0, -25, 0), (24, 6, 6))] = 4  # joint effusion / fluid
    labels[ellipsoid((10, 5, 28), (5, 5, 5))] = 4  # an "edema" focus in the femoral marrow
    labels[ellipsoid((-25, 20, -5), (8, 5, 14), _rot(0, 20))] = 4
    texture = ndimage.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 3.0)
    texture = 1.0 + 0.15 * texture / texture.std()
    return _Phantom(labels, texture.astype(np.float32))


def _direction(row: tuple[float, float, float], col: tuple[float, float, float]) -> NDArray[np.float64]:
    r, c = np.asarray(row, float), np.asarray(col, float)
    return np.column_stack([r, c, np.cross(r, c)])


def _centered_geometry(shape: tuple[int, int, int], spacing: tuple[float, float, float],
                       direction: NDArray[np.float64], center: tuple[float, float, float] = (0, 0, 0)
                       ) -> Geometry:
    half = (np.asarray(shape) - 1) / 2.0 * np.asarray(spacing)
    origin = np.asarray(center) - direction @ half
    return Geometry(shape, spacing, tuple(origin), direction)  # type: ignore[arg-type]


# STIR-like: sagittal, rows run A->P ... i along +P, j along -S (head to foot), slices along -L (flipped axis)
STIR_GEOM = _centered_geometry((96, 96, 24), (1.25, 1.25, 3.5), _direction((0, 1, 0), (0, 0, -1)),
                               center=(1.0, -2.0, 0.5))
# T1-like: coronal, finer in-plane, thinner slices, different field of view
T1_GEOM = _centered_geometry((112, 112, 24), (1.0, 1.0, 3.0), _direction((1, 0, 0), (0, 0, -1)),
                             center=(-2.0, 1.0, -1.0))


@dataclass(frozen=True)
class _Motion:
    """Rigid map p -> R (p - c) + c + t (world LPS mm)."""

    rotation: NDArray[np.float64]
    center: NDArray[np.float64]
    translation: NDArray[np.float64]

    def apply(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        return (p - self.center) @ self.rotation.T + self.center + self.translation

    def inverse_apply(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return (x - self.center - self.translation) @ self.rotation + self.center


IDENTITY = _Motion(np.eye(3), np.zeros(3), np.zeros(3))


def _sample(ph: _Phantom, geom: Geometry, lut: NDArray[np.float32], motion: _Motion, *,
            seed: int, noise: float = 0.02, labels: bool = False) -> Volume:
    """Acquire the phantom on ``geom`` after ``motion``; thick slices averaged over 3 sub-slices."""
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in geom.shape], indexing="ij"), -1)
    offsets = [0.0] if labels else [-1 / 3, 0.0, 1 / 3]
    acc = np.zeros(geom.shape, dtype=np.float32)
    tissue = ndimage.gaussian_filter(lut[ph.labels], 0.7) * ph.texture
    for off in offsets:
        x = geom.index_to_lps(ijk + np.array([0.0, 0.0, off]))  # world point seen by the voxel
        p = motion.inverse_apply(x.reshape(-1, 3))  # phantom point seen there
        idx = ((p + _PH_HALF) / _PH_STEP).T
        if labels:
            lab = ndimage.map_coordinates(ph.labels, idx, order=0, mode="constant", cval=0)
            return Volume(lab.reshape(geom.shape).astype(np.uint8), geom)
        acc += ndimage.map_coordinates(tissue, idx, order=1, mode="constant", cval=0.0).reshape(geom.shape)
    img = acc / len(offsets)
    img += noise * np.random.default_rng(seed).standard_normal(geom.shape).astype(np.float32)
    return Volume((1000.0 * img).astype(np.float32), geom)  # arbitrary units


# ----------------------------------------------------------------------------- fixtures and checks

MOTION = _Motion(_rot(2, 3.0), np.array([5.0, -3.0, 2.0]), np.array([2.0, -1.5, 1.0]))  # 3 deg about S
MOTION_OBLIQUE = _Motion(_rot(0, 4.0) @ _rot(1, -3.0), np.array([0.0, 10.0, -5.0]), np.array([-3.0, 2.0, -2.5]))


@pytest.fixture(scope="module")
def phantom() -> _Phantom:
    return _make_phantom()


@pytest.fixture(scope="module")
def stir(phantom: _Phantom) -> Volume:
    return _sample(phantom, STIR_GEOM, _STIR_LUT, IDENTITY, seed=2)


@pytest.fixture(scope="module")
def t1_moved(phantom: _Phantom) -> Volume:
    return _sample(phantom, T1_GEOM, _T1_LUT, MOTION, seed=3)


@pytest.fixture(scope="module")
def result_moved(stir: Volume, t1_moved: Volume) -> RegistrationResult:
    return register_rigid(stir, t1_moved)


def _overlap_points(motion: _Motion) -> NDArray[np.float64]:
    """STIR voxel centres (every 7th) whose anatomy is also inside the T1 field of view."""
    ijk = np.argwhere(np.ones(STIR_GEOM.shape, dtype=bool))[::7].astype(float)
    y = STIR_GEOM.index_to_lps(ijk)
    idx = T1_GEOM.lps_to_index(motion.apply(y))
    inside = np.all((idx >= 0) & (idx <= np.asarray(T1_GEOM.shape) - 1), axis=1)
    return y[inside]


def _errors(result: RegistrationResult, motion: _Motion) -> tuple[float, float]:
    """(max point error over the overlap in mm, residual rotation in degrees) against the truth ``motion``."""
    y = _overlap_points(motion)
    dist = float(np.max(np.linalg.norm(result.apply(y) - motion.apply(y), axis=1)))
    r = result.rotation_matrix @ motion.rotation.T
    angle = float(np.degrees(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))
    return dist, angle


# ----------------------------------------------------------------------------- registration accuracy


def test_phantom_motion_is_visible(stir: Volume, t1_moved: Volume) -> None:
    # guard for the accuracy tests: without registration the error is several mm
    dist, angle = _errors(RegistrationResult(), MOTION)
    assert dist > 4.0 and angle == pytest.approx(3.0, abs=1e-6)


def test_recovers_known_motion(result_moved: RegistrationResult) -> None:
    dist, angle = _errors(result_moved, MOTION)
    assert dist < 1.0, f"max point error {dist:.2f} mm"
    assert angle < 1.0, f"rotation error {angle:.2f} deg"
    assert result_moved.status == "ok", result_moved.reasons
    assert result_moved.metric_after is not None and result_moved.metric_before is not None
    assert result_moved.metric_after < result_moved.metric_before - 0.1
    assert result_moved.nmi_after is not None and result_moved.nmi_before is not None
    assert result_moved.nmi_after > result_moved.nmi_before + 0.02
    assert 0.3 < (result_moved.overlap_fraction or 0.0) <= 1.0


def test_recovers_oblique_motion(phantom: _Phantom, stir: Volume) -> None:
    t1 = _sample(phantom, T1_GEOM, _T1_LUT, MOTION_OBLIQUE, seed=4)
    result = register_rigid(stir, t1)
    dist, angle = _errors(result, MOTION_OBLIQUE)
    assert dist < 1.0 and angle < 1.0, (dist, angle)
    assert result.status == "ok", result.reasons


def test_recovers_motion_with_fixed_mask(phantom: _Phantom, stir: Volume, t1_moved: Volume) -> None:
    labels = _sample(phantom, STIR_GEOM, _STIR_LUT, IDENTITY, seed=0, labels=True)
    mask = labels.with_array(ndimage.binary_dilation(labels.array > 0, iterations=2).astype(np.uint8))
    result = register_rigid(stir, t1_moved, fixed_mask=mask)
    dist, angle = _errors(result, MOTION)
    assert dist < 1.0 and angle < 1.0, (dist, angle)
    assert result.status == "ok", result.reasons


def test_identity_stays_near_identity(phantom: _Phantom, stir: Volume) -> None:
    t1 = _sample(phantom, T1_GEOM, _T1_LUT, IDENTITY, seed=3)
    result = register_rigid(stir, t1)
    dist, angle = _errors(result, IDENTITY)
    assert dist < 0.75 and angle < 0.5, (dist, angle)
    assert result.status == "ok", result.reasons


@pytest.fixture
def one_itk_thread() -> Iterator[None]:
    """The caller's choice that makes ITK bit-reproducible (register_rigid never sets the global)."""
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    yield
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def test_deterministic_bit_for_bit(stir: Volume, t1_moved: Volume, one_itk_thread: None) -> None:
    a, b = register_rigid(stir, t1_moved), register_rigid(stir, t1_moved)
    assert a.rotation_deg == b.rotation_deg and a.translation_mm == b.translation_mm
    assert a.metric_after == b.metric_after and a.iterations == b.iterations


def test_repeatable_with_several_threads(stir: Volume, t1_moved: Volume,
                                         result_moved: RegistrationResult) -> None:
    # global ITK threads as the caller left them; metric on 1 thread (default) and on 2 threads
    again = register_rigid(stir, t1_moved)
    assert np.allclose(again.rotation_deg, result_moved.rotation_deg, rtol=0, atol=1e-9)
    assert np.allclose(again.translation_mm, result_moved.translation_mm, rtol=0, atol=1e-9)
    assert again.iterations == result_moved.iterations
    # a metric on several threads sums in a varying order: ~1e-7 mm run to run (documented), not bit-exact
    two = RegistrationSettings(n_threads=2)
    a, b = register_rigid(stir, t1_moved, settings=two), register_rigid(stir, t1_moved, settings=two)
    assert np.allclose(a.matrix, b.matrix, rtol=0, atol=0.01)
    assert np.allclose(a.matrix, result_moved.matrix, rtol=0, atol=0.05)


# ----------------------------------------------------------------------------- implausible inputs


def test_pure_noise_is_not_ok(stir: Volume) -> None:
    rng = np.random.default_rng(7)
    noise = Volume(rng.random(T1_GEOM.shape).astype(np.float32), T1_GEOM)
    result = register_rigid(stir, noise)
    assert result.status in ("failed", "suspicious")
    assert not result.status == "ok" and result.reasons
    assert result.status == "failed"  # NMI ~1.00: no shared structure at all


@pytest.mark.parametrize("shift", [(0.0, 0.0, 40.0), (40.0, 0.0, 0.0)], ids=["S40mm", "L40mm"])
def test_large_shift_is_not_ok(phantom: _Phantom, stir: Volume, shift: tuple[float, float, float]) -> None:
    # 40 mm is beyond max_translation_mm: either it is found (then 'failed' by the threshold) or it is
    # not (then the final NMI is low and the result is flagged) -- never a silent 'ok'
    t1 = _sample(phantom, T1_GEOM, _T1_LUT, _Motion(np.eye(3), np.zeros(3), np.asarray(shift)), seed=3)
    result = register_rigid(stir, t1)
    assert result.status in ("failed", "suspicious"), result
    assert result.reasons


def test_rotation_beyond_threshold_fails(phantom: _Phantom, stir: Volume) -> None:
    t1 = _sample(phantom, T1_GEOM, _T1_LUT, _Motion(_rot(0, 15.0), np.zeros(3), np.zeros(3)), seed=3)
    result = register_rigid(stir, t1)
    assert result.status == "failed"
    assert any("max_rotation_deg" in r for r in result.reasons)
    assert not result.accepted


def test_no_overlap_fails_without_raising(stir: Volume, t1_moved: Volume) -> None:
    g = T1_GEOM
    far = Geometry(g.shape, g.spacing_mm, tuple(np.asarray(g.origin_lps_mm) + 500.0), g.direction)  # type: ignore[arg-type]
    result = register_rigid(stir, Volume(t1_moved.array, far))
    assert result.status == "failed" and result.reasons
    assert result.rotation_deg == (0.0, 0.0, 0.0) and result.translation_mm == (0.0, 0.0, 0.0)


def test_constant_image_fails(stir: Volume) -> None:
    result = register_rigid(stir, Volume(np.ones(T1_GEOM.shape, np.float32), T1_GEOM))
    assert result.status == "failed" and "constant" in result.reasons[0]


def test_disabled_is_skipped(stir: Volume, t1_moved: Volume) -> None:
    result = register_rigid(stir, t1_moved, settings=RegistrationSettings(enabled=False))
    assert result.status == RegistrationStatus.SKIPPED
    assert np.array_equal(result.matrix, np.eye(4))
    d = json.loads(json.dumps(result.to_dict()))
    assert d["status"] == "skipped" and d["metric_before"] is None


# ----------------------------------------------------------------------------- result object


def test_to_dict_is_json_ready(result_moved: RegistrationResult) -> None:
    d = json.loads(json.dumps(result_moved.to_dict(), allow_nan=False))
    for key in ("rotation_deg", "translation_mm", "metric_before", "metric_after", "status",
                "nmi_before", "nmi_after", "reasons", "iterations", "elapsed_s", "matrix_fixed_to_moving"):
        assert key in d
    assert d["status"] == "ok"
    assert len(d["rotation_deg"]) == 3 and all(isinstance(x, float) for x in d["translation_mm"])
    assert np.allclose(d["matrix_fixed_to_moving"], result_moved.matrix)


def test_matrix_matches_sitk_transform() -> None:
    r = RegistrationResult(rotation_deg=(3.0, -2.0, 7.5), translation_mm=(1.0, -4.0, 2.5),
                           center_lps_mm=(10.0, -20.0, 30.0))
    tx = r.to_sitk_transform()
    pts = np.array([[0.0, 0.0, 0.0], [55.0, -12.0, 3.0], [-40.0, 80.0, -25.0]])
    expected = np.array([tx.TransformPoint(tuple(p)) for p in pts])
    assert np.allclose(r.apply(pts), expected, atol=1e-9)
    m = r.matrix
    assert np.allclose(m[:3, :3].T @ m[:3, :3], np.eye(3)) and np.allclose(m[3], [0, 0, 0, 1])
    assert r.rotation_angle_deg > 7.5


def test_status_accepts_strings_and_rejects_unknown() -> None:
    assert RegistrationResult(status="suspicious").status is RegistrationStatus.SUSPICIOUS  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'status' must be one of"):
        RegistrationResult(status="great")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"smoothing_sigmas_mm": (1.0, 0.0)}, "one value per pyramid level"),
        ({"sampling_strategy": "sparse"}, "'sampling_strategy' must be one of"),
        ({"sampling_percentage": 0.0}, "sampling_percentage"),
        ({"clip_percentiles": (99.0, 1.0)}, "clip_percentiles"),
        ({"n_threads": 0}, "n_threads"),
        ({"max_samples": 10}, "max_samples"),
    ],
)
def test_settings_are_validated(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RegistrationSettings(**kwargs)  # type: ignore[arg-type]


def test_samples_are_bounded() -> None:
    """A fine fixed level (384x384x20 at 0.73 mm is not shrunk on the 1 mm level) draws at most
    max_samples; a small one (the knee's 2 mm level) keeps sampling_percentage."""
    from bmeseg.register import _sampling_fraction

    def image(size: tuple[int, int, int]) -> sitk.Image:
        return sitk.Image(list(size), sitk.sitkFloat32)

    s = RegistrationSettings()
    assert s.max_samples is not None
    assert _sampling_fraction(s, image((384, 384, 20))) * 384 * 384 * 20 == pytest.approx(s.max_samples)
    assert _sampling_fraction(s, image((64, 64, 26))) == s.sampling_percentage
    assert _sampling_fraction(replace(s, max_samples=None), image((384, 384, 20))) == s.sampling_percentage


# ----------------------------------------------------------------------------- resampling


def test_resample_puts_t1_anatomy_on_stir_grid(phantom: _Phantom, result_moved: RegistrationResult) -> None:
    # end-to-end check of the convention: T1 labels pulled through the result land on the STIR labels
    stir_labels = _sample(phantom, STIR_GEOM, _STIR_LUT, IDENTITY, seed=0, labels=True)
    t1_labels = _sample(phantom, T1_GEOM, _T1_LUT, MOTION, seed=0, labels=True)
    truth = RegistrationResult(rotation_deg=(0.0, 0.0, 3.0), translation_mm=tuple(MOTION.translation),
                               center_lps_mm=tuple(MOTION.center))  # type: ignore[arg-type]
    assert np.allclose(truth.rotation_matrix, MOTION.rotation)  # ITK's Euler angles are ours
    out = {name: resample_to(t1_labels, STIR_GEOM, r, interpolation="nearest", default_value=255)
           for name, r in (("registered", result_moved), ("truth", truth), ("scanner", None))}
    assert out["registered"].array.dtype == np.uint8
    assert set(np.unique(out["registered"].array)) <= set(np.unique(t1_labels.array)) | {255}
    inside = np.logical_and.reduce([v.array != 255 for v in out.values()])
    agree = {k: float(np.mean(v.array[inside] == stir_labels.array[inside])) for k, v in out.items()}
    # nearest-neighbour labels on two thick-slice grids never agree perfectly, even with the true motion
    assert agree["registered"] > agree["truth"] - 0.01, agree
    assert agree["registered"] > agree["scanner"] + 0.05, agree


def test_resample_nearest_keeps_label_values_and_dtype(t1_moved: Volume) -> None:
    rng = np.random.default_rng(11)
    values = np.array([0, 3, 7, 1200], dtype=np.int16)
    labels = Volume(values[rng.integers(0, 4, T1_GEOM.shape)], T1_GEOM, {"name": "labels"})
    r = RegistrationResult(rotation_deg=(1.0, 2.0, -3.0), translation_mm=(0.3, -0.7, 1.1))
    out = resample_to(labels, STIR_GEOM, r, interpolation="nearest")
    assert out.array.dtype == np.int16 and out.geometry == STIR_GEOM
    assert set(np.unique(out.array)) <= set(values.tolist())
    assert out.meta == {"name": "labels"}
    mask = Volume(labels.array > 3, T1_GEOM)
    out_mask = resample_to(mask, STIR_GEOM, r, interpolation="nearest")
    assert out_mask.array.dtype == np.bool_


@pytest.mark.parametrize("interpolation", ["linear", "bspline"])
def test_resample_identity_on_same_grid_is_exact(t1_moved: Volume, interpolation: str) -> None:
    out = resample_to(t1_moved.replace_meta(series="t1"), T1_GEOM, None, interpolation=interpolation)
    assert out.array.dtype == np.float32 and out.meta["series"] == "t1"
    assert np.allclose(out.array, t1_moved.array, atol=1e-3)


def test_resample_linear_of_integer_image_is_float32(t1_moved: Volume) -> None:
    ints = Volume(np.round(np.abs(t1_moved.array)).astype(np.int16), T1_GEOM)
    out = resample_to(ints, STIR_GEOM, None, default_value=-1.0)
    assert out.array.dtype == np.float32 and out.array.min() == -1.0


def test_resample_rejects_unknown_interpolation(t1_moved: Volume) -> None:
    with pytest.raises(ConfigError, match="'interpolation' must be one of"):
        resample_to(t1_moved, STIR_GEOM, None, interpolation="cubic")


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.slow
def test_real_sij_pair_recovers_added_motion(real_data: Path) -> None:
    """A real T1/STIR pair (same session, 0.6x0.6x3.3 mm): plausible as is, and a known motion added to
    the T1 is recovered on top of whatever the pair needed."""
    from bmeseg.io.nifti import read_nifti

    subject = real_data / "sij_bone_mri" / "1007"
    if not subject.is_dir():
        pytest.skip(f"{subject} not present")
    t1, stir = read_nifti(subject / "t1.nii.gz"), read_nifti(subject / "stir.nii.gz")
    base = register_rigid(stir, t1)
    assert base.accepted and base.rotation_angle_deg < 2.0 and base.translation_norm_mm < 3.0, base.reasons
    assert (base.nmi_after or 0.0) > 1.03

    added = RegistrationResult(rotation_deg=(2.0, -1.5, 3.0), translation_mm=(2.0, -1.5, 1.0),
                               center_lps_mm=base.center_lps_mm)
    inverse = sitk.Euler3DTransform(added.to_sitk_transform().GetInverse())
    p = inverse.GetParameters()
    pull = RegistrationResult(rotation_deg=tuple(np.degrees(p[:3])), translation_mm=tuple(p[3:]),  # type: ignore[arg-type]
                              center_lps_mm=inverse.GetCenter())
    moved = resample_to(t1, t1.geometry, pull)  # the T1 anatomy moved by `added`
    result = register_rigid(stir, moved)
    assert result.status == "ok", result.reasons

    body = np.argwhere(stir.array > np.percentile(stir.array, 60))[::50].astype(float)
    y = stir.geometry.index_to_lps(body)
    expected = added.apply(base.apply(y))
    dist = float(np.max(np.linalg.norm(result.apply(y) - expected, axis=1)))
    r = result.rotation_matrix @ (added.rotation_matrix @ base.rotation_matrix).T
    angle = float(np.degrees(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))
    assert dist < 1.5 and angle < 1.0, (dist, angle)
