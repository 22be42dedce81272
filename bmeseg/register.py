"""Rigid registration of the T1 series onto the fat-suppressed (STIR) series.

Both series come from the same session and share a DICOM frame of reference, so
the scanner geometry is already a good alignment; registration only corrects
patient motion between the two acquisitions (typically a few mm / degrees).

Conventions
-----------
* ``fixed`` is the STIR volume, ``moving`` is the T1 volume.
* The estimated transform ``T`` maps a **fixed** LPS point (mm) to the **moving**
  LPS point that shows the same anatomy (the ITK convention). Resampling the
  moving image through ``T`` onto the fixed grid -- :func:`resample_to` -- puts
  the T1 on the STIR voxels.
* ``T`` is an ITK ``Euler3DTransform``: ``T(x) = R (x - c) + c + t`` with ``R``
  built from ``rotation_deg = (about L, about P, about S)`` in ITK's Z-X-Y order,
  ``c = center_lps_mm`` and ``t = translation_mm``.
* The start is the identity in world space (scanner geometry); the rotation
  centre is the centre of the fixed field of view (or of the fixed mask's
  bounding box), i.e. the point ``CenteredTransformInitializer(..., GEOMETRY)``
  would pick, but the translation is left at zero.

Determinism
-----------
Metric samples are drawn with a fixed seed (``settings.seed``; ITK treats a seed
of 0 as "wall clock", so ``seed + 1 + level`` is passed to ITK), and the metric
runs on ``settings.n_threads`` threads (default 1), so the result does not
depend on the machine's core count. Some ITK internals of the optimiser use the
process-wide default thread count instead (with two global threads repeated runs
differed by ~3e-8 degrees), so with ``n_threads == 1`` :func:`register_rigid`
sets that default to 1 for the duration of the call and restores it afterwards:
repeated runs are then bit-identical. A metric on several threads
(``n_threads > 1``) sums in a varying order: repeated runs then differ by ~1e-7 mm.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import ArrayLike, NDArray

from .errors import ConfigError
from .volume import Geometry, Volume, from_sitk, to_sitk

__all__ = [
    "Interpolation",
    "RegistrationResult",
    "RegistrationSettings",
    "RegistrationStatus",
    "register_rigid",
    "resample_to",
]

log = logging.getLogger(__name__)

_NMI_BINS = 32


class RegistrationStatus(StrEnum):
    """Outcome of :func:`register_rigid`.

    ``OK`` and ``SUSPICIOUS`` results may be used (the latter flagged in QA);
    ``FAILED`` means the caller should fall back to the scanner geometry;
    ``SKIPPED`` means registration was disabled.
    """

    OK = "ok"
    SUSPICIOUS = "suspicious"
    FAILED = "failed"
    SKIPPED = "skipped"


class Interpolation(StrEnum):
    """Interpolators accepted by :func:`resample_to`."""

    LINEAR = "linear"
    BSPLINE = "bspline"
    NEAREST = "nearest"


_SITK_INTERPOLATORS = {
    Interpolation.LINEAR: sitk.sitkLinear,
    Interpolation.BSPLINE: sitk.sitkBSpline,
    Interpolation.NEAREST: sitk.sitkNearestNeighbor,
}


def _one_of(name: str, value: object, choices: type[StrEnum]) -> Any:
    try:
        return choices(str(value))
    except ValueError:
        allowed = ", ".join(repr(c.value) for c in choices)
        raise ConfigError(f"'{name}' must be one of {{{allowed}}}; got {value!r}") from None


@dataclass(frozen=True)
class RegistrationSettings:
    """Options of :func:`register_rigid`.

    Parameters
    ----------
    enabled : bool
        ``False`` skips registration: the result is the identity (scanner
        geometry) with status ``"skipped"``.
    metric_bins : int
        Histogram bins of the Mattes mutual information metric.
    sampling_percentage : float
        Fraction (0-1] of fixed voxels used as metric samples at each level,
        but at most ``max_samples``.
    sampling_strategy : {"random", "regular"}
        ITK metric sampling; both are seeded by ``seed``.
    pyramid_spacing_mm : tuple of float
        Coarse-to-fine target voxel size of each resolution level. Each axis of
        each image is bin-shrunk by ``round(target / spacing)`` (at least 1, and
        never below 4 voxels), so thick slices are not shrunk further while fine
        in-plane pixels are.
    smoothing_sigmas_mm : tuple of float
        Gaussian smoothing (mm) applied after shrinking, one per level.
    max_step_mm : tuple of float
        Initial step of the regular-step gradient descent per level, in mm of
        the largest voxel shift (optimizer scales come from
        ``SetOptimizerScalesFromPhysicalShift``).
    min_step_mm : float
        Convergence: a level stops when the step shrinks below this.
    max_iterations : int
        Iteration limit per level.
    relaxation_factor : float
        Step reduction when the gradient changes direction.
    gradient_tolerance : float
        Convergence: a level stops when the gradient magnitude falls below this.
    clip_percentiles : tuple of 2 float
        Intensities are clipped at these percentiles and rescaled to [0, 1]
        before registration (robust to hot pixels and arbitrary units).
    seed : int
        Seed of the metric sampling.
    n_threads : int or None
        Threads of the metric evaluation; ``None`` follows the ITK global
        default. ``1`` (the default; about 1 s for a 320x320x26 / 256x256x26
        pair) makes results independent of the machine's core count.
    max_rotation_deg, max_translation_mm : float
        A total rotation angle or translation beyond these gives status
        ``"failed"`` (implausible for two series of one session).
    warn_rotation_deg, warn_translation_mm : float
        Beyond these (but within the max) the status is ``"suspicious"``.
    metric_tolerance : float
        When the optimised Mattes MI is no better than at the scanner geometry,
        the scanner geometry (identity) is kept; when it is worse by more than
        this fraction of its magnitude the optimisation went astray and the
        status is ``"failed"``. The sampled metric is noisy at the 0.1-0.5 %
        level near the optimum, and series acquired on the same grid show an
        interpolation artefact of 1-1.5 % at the identity.
    nmi_tolerance : float
        Status ``"suspicious"`` when the normalised mutual information dropped
        by more than this.
    min_nmi, warn_nmi : float
        Status ``"failed"`` / ``"suspicious"`` when the final normalised mutual
        information ``(H(F) + H(M)) / H(F, M)`` (1 = independent, 2 = identical)
        is below these: the images share too little structure for a trustworthy
        registration. Real T1/STIR pairs (sacroiliac joints, 0.6x0.6x3.3 mm)
        gave 1.035-1.14; pure noise gave 1.001-1.002 and a 40 mm offset that
        the optimiser could not capture 1.006-1.01.
    min_overlap_fraction : float
        Status ``"suspicious"`` when fewer than this fraction of the fixed
        (masked) voxels map inside the moving image.
    max_samples : int or None
        Metric samples per level at most (``None``: ``sampling_percentage``
        of every level). Bounds the cost of an iteration on fine grids: a
        384x384x20 STIR of 0.73 mm pixels (not shrunk on the 1 mm level) drew
        590,000 samples there, 7x a knee's 85,000. With 50,000 (the default)
        the error against known motion stayed within the scatter between
        sampling seeds: max point error over 14 phantom studies x 4 seeds
        0.523 mm uncapped -> 0.544 mm; a known motion added to the 6 real SIJ
        pairs 0.85 -> 0.87 mm; tests/test_register.py's phantom at knee size
        (85,000 samples uncapped) 0.13 -> 0.16 mm over 5 seeds.
    """

    enabled: bool = True
    metric_bins: int = 32
    sampling_percentage: float = 0.2
    sampling_strategy: str = "random"
    pyramid_spacing_mm: tuple[float, ...] = (4.0, 2.0, 1.0)
    smoothing_sigmas_mm: tuple[float, ...] = (2.0, 1.0, 0.5)
    max_step_mm: tuple[float, ...] = (2.0, 0.5, 0.25)
    min_step_mm: float = 0.01
    max_iterations: int = 100
    relaxation_factor: float = 0.7
    gradient_tolerance: float = 1e-6
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    seed: int = 0
    n_threads: int | None = 1
    max_rotation_deg: float = 10.0
    max_translation_mm: float = 20.0
    warn_rotation_deg: float = 5.0
    warn_translation_mm: float = 10.0
    metric_tolerance: float = 0.05
    nmi_tolerance: float = 0.005
    min_nmi: float = 1.005
    warn_nmi: float = 1.015
    min_overlap_fraction: float = 0.1
    max_samples: int | None = 50_000

    def __post_init__(self) -> None:
        _one_of("sampling_strategy", self.sampling_strategy, _Sampling)
        n = len(self.pyramid_spacing_mm)
        if n == 0:
            raise ConfigError("'pyramid_spacing_mm' must have at least one level; got ()")
        for name in ("smoothing_sigmas_mm", "max_step_mm"):
            if len(getattr(self, name)) != n:
                raise ConfigError(
                    f"'{name}' must have one value per pyramid level ({n}); got {getattr(self, name)}"
                )
        if min(self.pyramid_spacing_mm) <= 0 or min(self.max_step_mm) <= 0:
            raise ConfigError("'pyramid_spacing_mm' and 'max_step_mm' must be > 0")
        if min(self.smoothing_sigmas_mm) < 0:
            raise ConfigError(f"'smoothing_sigmas_mm' must be >= 0; got {self.smoothing_sigmas_mm}")
        if not 0 < self.sampling_percentage <= 1:
            raise ConfigError(f"'sampling_percentage' must be in (0, 1]; got {self.sampling_percentage}")
        if self.metric_bins < 4:
            raise ConfigError(f"'metric_bins' must be >= 4; got {self.metric_bins}")
        if self.max_iterations < 1:
            raise ConfigError(f"'max_iterations' must be >= 1; got {self.max_iterations}")
        lo, hi = self.clip_percentiles
        if not 0 <= lo < hi <= 100:
            raise ConfigError(f"'clip_percentiles' must satisfy 0 <= lo < hi <= 100; got {self.clip_percentiles}")
        if not 0 <= self.seed < 2**31 - 64:
            raise ConfigError(f"'seed' must be in [0, 2**31 - 64); got {self.seed}")
        if self.n_threads is not None and self.n_threads < 1:
            raise ConfigError(f"'n_threads' must be None or >= 1; got {self.n_threads}")
        if self.max_samples is not None and self.max_samples < 1000:
            raise ConfigError(f"'max_samples' must be None or >= 1000; got {self.max_samples}")


class _Sampling(StrEnum):
    RANDOM = "random"
    REGULAR = "regular"


def _json_float(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(x)


@dataclass(frozen=True)
class RegistrationResult:
    """A rigid transform from fixed (STIR) LPS points to moving (T1) LPS points, with QA figures.

    Attributes
    ----------
    rotation_deg : tuple of 3 float
        Euler angles about the L, P and S axes, degrees (ITK ``Euler3DTransform``).
    translation_mm : tuple of 3 float
        Translation in LPS mm (the displacement of ``center_lps_mm``).
    center_lps_mm : tuple of 3 float
        Centre of rotation, LPS mm.
    status : RegistrationStatus
        ``"ok"``, ``"suspicious"``, ``"failed"`` or ``"skipped"``.
    reasons : tuple of str
        Why the status is not ``"ok"``, and whether the scanner geometry was
        kept because the optimiser did not improve the metric.
    metric_before, metric_after : float or None
        Mattes mutual information (ITK sign: lower is better) at the scanner
        geometry and at the result, on the finest level with the same samples.
    nmi_before, nmi_after : float or None
        Normalised mutual information ``(H(F) + H(M)) / H(F, M)`` over all
        overlapping (masked) voxels of the finest level; higher is better.
    overlap_fraction : float or None
        Fraction of fixed (masked) voxels that map inside the moving image.
    iterations : int
        Optimizer iterations summed over levels.
    elapsed_s : float
        Wall time of :func:`register_rigid`.
    stop_condition : str
        The optimizer's stop condition at the finest level.
    """

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    center_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    status: RegistrationStatus = RegistrationStatus.OK
    reasons: tuple[str, ...] = ()
    metric_before: float | None = None
    metric_after: float | None = None
    nmi_before: float | None = None
    nmi_after: float | None = None
    overlap_fraction: float | None = None
    iterations: int = 0
    elapsed_s: float = 0.0
    stop_condition: str = ""
    settings: RegistrationSettings = field(default_factory=RegistrationSettings, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", _one_of("status", self.status, RegistrationStatus))
        for name in ("rotation_deg", "translation_mm", "center_lps_mm"):
            v = tuple(float(x) for x in getattr(self, name))
            if len(v) != 3:
                raise ValueError(f"'{name}' must have 3 values; got {v}")
            object.__setattr__(self, name, v)
        object.__setattr__(self, "reasons", tuple(self.reasons))

    @property
    def accepted(self) -> bool:
        """True when the transform should be used (status ``"ok"`` or ``"suspicious"``)."""
        return self.status in (RegistrationStatus.OK, RegistrationStatus.SUSPICIOUS)

    def to_sitk_transform(self) -> sitk.Euler3DTransform:
        """The transform as a SimpleITK ``Euler3DTransform`` (fixed LPS -> moving LPS)."""
        tx = sitk.Euler3DTransform()
        tx.SetCenter(self.center_lps_mm)
        tx.SetRotation(*(math.radians(a) for a in self.rotation_deg))
        tx.SetTranslation(self.translation_mm)
        return tx

    @property
    def rotation_matrix(self) -> NDArray[np.float64]:
        """(3, 3) rotation ``R``."""
        return np.asarray(self.to_sitk_transform().GetMatrix(), dtype=np.float64).reshape(3, 3)

    @property
    def matrix(self) -> NDArray[np.float64]:
        """4x4 homogeneous matrix mapping fixed LPS points (mm) to moving LPS points (mm)."""
        r = self.rotation_matrix
        c = np.asarray(self.center_lps_mm)
        m = np.eye(4)
        m[:3, :3] = r
        m[:3, 3] = c + np.asarray(self.translation_mm) - r @ c
        return m

    @property
    def rotation_angle_deg(self) -> float:
        """Total rotation angle (axis-angle), degrees."""
        cos = (np.trace(self.rotation_matrix) - 1.0) / 2.0
        return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))

    @property
    def translation_norm_mm(self) -> float:
        return float(np.linalg.norm(self.translation_mm))

    def apply(self, points_lps_mm: ArrayLike) -> NDArray[np.float64]:
        """Map ``(..., 3)`` fixed LPS points (mm) to moving LPS points (mm).

        Examples
        --------
        >>> r = RegistrationResult(translation_mm=(1.0, 2.0, 3.0))
        >>> r.apply([0.0, 0.0, 0.0]).tolist()
        [1.0, 2.0, 3.0]
        """
        p = np.asarray(points_lps_mm, dtype=np.float64)
        m = self.matrix
        return p @ m[:3, :3].T + m[:3, 3]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the ``registration`` block of report.json."""
        return {
            "status": str(self.status),
            "reasons": list(self.reasons),
            "transform": "Euler3D fixed(STIR) LPS -> moving(T1) LPS",
            "rotation_deg": [float(x) for x in self.rotation_deg],
            "translation_mm": [float(x) for x in self.translation_mm],
            "center_lps_mm": [float(x) for x in self.center_lps_mm],
            "rotation_angle_deg": self.rotation_angle_deg,
            "translation_norm_mm": self.translation_norm_mm,
            "matrix_fixed_to_moving": self.matrix.tolist(),
            "metric": "mattes_mutual_information",
            "metric_before": _json_float(self.metric_before),
            "metric_after": _json_float(self.metric_after),
            "nmi_before": _json_float(self.nmi_before),
            "nmi_after": _json_float(self.nmi_after),
            "overlap_fraction": _json_float(self.overlap_fraction),
            "iterations": int(self.iterations),
            "elapsed_s": float(self.elapsed_s),
            "stop_condition": self.stop_condition,
            "settings": _settings_dict(self.settings),
        }


def _settings_dict(settings: RegistrationSettings) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}


# --------------------------------------------------------------------------- preprocessing


def _normalised_image(vol: Volume, clip: tuple[float, float]) -> sitk.Image | None:
    """float32 image clipped at percentiles and rescaled to [0, 1]; None if constant."""
    arr = np.asarray(vol.array, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        arr = np.where(finite, arr, 0.0).astype(np.float32)
    lo, hi = np.percentile(arr, clip)
    if not hi > lo:
        return None
    arr = (np.clip(arr, lo, hi) - np.float32(lo)) / np.float32(hi - lo)
    return to_sitk(vol.with_array(arr.astype(np.float32, copy=False)))


def _shrink_factors(img: sitk.Image, target_mm: float) -> list[int]:
    out = []
    for sp, n in zip(img.GetSpacing(), img.GetSize(), strict=True):
        f = max(1, round(target_mm / sp))
        out.append(int(min(f, max(1, n // 4))))
    return out


def _level_image(img: sitk.Image, target_mm: float, sigma_mm: float) -> sitk.Image:
    factors = _shrink_factors(img, target_mm)
    out = sitk.BinShrink(img, factors) if max(factors) > 1 else img
    if sigma_mm > 0:
        out = sitk.SmoothingRecursiveGaussian(out, sigma_mm)
    return out


def _mask_image(mask: Volume, fixed: Volume) -> sitk.Image:
    arr = (np.asarray(mask.array) > 0).astype(np.uint8)
    img = to_sitk(mask.with_array(arr))
    if not mask.geometry.same_grid(fixed.geometry):
        img = sitk.Resample(img, to_sitk(fixed), sitk.Transform(3, sitk.sitkIdentity),
                            sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return img


def _center_lps(fixed: sitk.Image, mask: sitk.Image | None) -> tuple[float, float, float]:
    lo = np.zeros(3)
    hi = np.asarray(fixed.GetSize(), dtype=float) - 1.0
    ref = fixed
    if mask is not None:
        nz = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)  # [k, j, i]
        if nz.size:
            lo, hi = nz.min(axis=0)[::-1].astype(float), nz.max(axis=0)[::-1].astype(float)
            ref = mask
    mid = tuple(float(x) for x in (lo + hi) / 2.0)
    c = ref.TransformContinuousIndexToPhysicalPoint(mid)
    return (float(c[0]), float(c[1]), float(c[2]))


# --------------------------------------------------------------------------- registration


def _sampling_fraction(settings: RegistrationSettings, fixed: sitk.Image) -> float:
    """``sampling_percentage`` of the level's voxels, but at most ``max_samples`` of them."""
    n = int(np.prod(fixed.GetSize()))
    if settings.max_samples is None or settings.sampling_percentage * n <= settings.max_samples:
        return settings.sampling_percentage
    return settings.max_samples / n


def _method(settings: RegistrationSettings, level: int, fixed: sitk.Image) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.metric_bins)
    strategy = _Sampling(settings.sampling_strategy)
    reg.SetMetricSamplingStrategy(reg.RANDOM if strategy is _Sampling.RANDOM else reg.REGULAR)
    # ITK reads seed 0 as "use the wall clock": never pass 0.
    reg.SetMetricSamplingPercentage(_sampling_fraction(settings, fixed), settings.seed + 1 + level)
    reg.SetInterpolator(sitk.sitkLinear)
    # central differences at the samples: cheaper than a gradient image per level
    reg.SetMetricUseFixedImageGradientFilter(False)
    reg.SetMetricUseMovingImageGradientFilter(False)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=settings.max_step_mm[level],
        minStep=settings.min_step_mm,
        numberOfIterations=settings.max_iterations,
        relaxationFactor=settings.relaxation_factor,
        gradientMagnitudeTolerance=settings.gradient_tolerance,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([1])
    reg.SetSmoothingSigmasPerLevel([0.0])
    if settings.n_threads is not None:
        reg.SetNumberOfThreads(settings.n_threads)
    return reg


def _metric(settings: RegistrationSettings, level: int, fixed: sitk.Image, moving: sitk.Image,
            mask: sitk.Image | None, tx: sitk.Transform) -> float:
    reg = _method(settings, level, fixed)
    if mask is not None:
        reg.SetMetricFixedMask(mask)
    reg.SetInitialTransform(sitk.Euler3DTransform(tx), inPlace=False)
    return float(reg.MetricEvaluate(fixed, moving))


def _overlap_figures(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image | None,
                     tx: sitk.Transform) -> tuple[float, float]:
    """(normalised mutual information, overlap fraction) on the fixed grid.

    Uses every fixed (masked) voxel whose transformed position falls inside the
    moving image, one voxel away from its border.
    """
    warped = sitk.Resample(moving, fixed, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    ones = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(moving)
    inside = sitk.Resample(ones, fixed, tx, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    roi = np.ones(inside.GetSize()[::-1], dtype=bool)
    if mask is not None:
        m = sitk.Resample(mask, fixed, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkNearestNeighbor, 0)
        roi = sitk.GetArrayViewFromImage(m) > 0
    n_roi = int(roi.sum())
    overlap = float(np.count_nonzero((sitk.GetArrayViewFromImage(inside) > 0) & roi)) / n_roi if n_roi else 0.0
    # drop the rim where the moving field of view ends (partial-volume with the zero padding)
    inside = sitk.BinaryErode(inside, [1, 1, 1])
    sel = (sitk.GetArrayViewFromImage(inside) > 0) & roi
    if np.count_nonzero(sel) < 100:
        return float("nan"), overlap
    f = sitk.GetArrayViewFromImage(fixed)[sel]
    w = sitk.GetArrayViewFromImage(warped)[sel]
    joint, _, _ = np.histogram2d(f, w, bins=_NMI_BINS, range=[[0.0, 1.0], [0.0, 1.0]])
    p = joint / joint.sum()

    def entropy(q: NDArray[np.float64]) -> float:
        q = q[q > 0]
        return float(-np.sum(q * np.log(q)))

    h_joint = entropy(p.ravel())
    nmi = (entropy(p.sum(axis=1)) + entropy(p.sum(axis=0))) / h_joint if h_joint > 0 else float("nan")
    return float(nmi), overlap


def _euler_params(tx: sitk.Euler3DTransform) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    p = tx.GetParameters()
    rot = (math.degrees(p[0]), math.degrees(p[1]), math.degrees(p[2]))
    return rot, (float(p[3]), float(p[4]), float(p[5]))


def _judge(r: RegistrationResult, s: RegistrationSettings) -> tuple[RegistrationStatus, list[str]]:
    failed: list[str] = []
    warn: list[str] = []
    angle, shift = r.rotation_angle_deg, r.translation_norm_mm
    if angle > s.max_rotation_deg:
        failed.append(f"rotation {angle:.1f} deg > max_rotation_deg {s.max_rotation_deg:g}")
    elif angle > s.warn_rotation_deg:
        warn.append(f"rotation {angle:.1f} deg > warn_rotation_deg {s.warn_rotation_deg:g}")
    if shift > s.max_translation_mm:
        failed.append(f"translation {shift:.1f} mm > max_translation_mm {s.max_translation_mm:g}")
    elif shift > s.warn_translation_mm:
        warn.append(f"translation {shift:.1f} mm > warn_translation_mm {s.warn_translation_mm:g}")
    mb, ma = r.metric_before, r.metric_after
    if mb is not None and ma is not None and ma > mb + s.metric_tolerance * abs(mb):
        failed.append(f"Mattes MI got worse ({mb:.4f} -> {ma:.4f})")
    nb, na = r.nmi_before, r.nmi_after
    if na is None or not math.isfinite(na):
        warn.append("normalised mutual information could not be computed (no overlap)")
    else:
        if nb is not None and math.isfinite(nb) and na < nb - s.nmi_tolerance:
            warn.append(f"normalised MI got worse ({nb:.4f} -> {na:.4f})")
        if na < s.min_nmi:
            failed.append(f"normalised MI {na:.4f} < min_nmi {s.min_nmi:g}: images share no usable structure")
        elif na < s.warn_nmi:
            warn.append(f"normalised MI {na:.4f} < warn_nmi {s.warn_nmi:g}: images share little structure")
    ov = r.overlap_fraction
    if ov is not None and ov < s.min_overlap_fraction:
        warn.append(f"overlap fraction {ov:.2f} < min_overlap_fraction {s.min_overlap_fraction:g}")
    if failed:
        return RegistrationStatus.FAILED, failed + warn
    if warn:
        return RegistrationStatus.SUSPICIOUS, warn
    return RegistrationStatus.OK, []


def register_rigid(
    fixed: Volume,
    moving: Volume,
    *,
    settings: RegistrationSettings | None = None,
    fixed_mask: Volume | None = None,
) -> RegistrationResult:
    """Rigidly register ``moving`` (T1) to ``fixed`` (STIR) with Mattes mutual information.

    Parameters
    ----------
    fixed : Volume
        The reference (STIR). Any orientation, spacing and intensity units.
    moving : Volume
        The image to align (T1); may be in another plane and resolution. Both
        volumes must share a frame of reference: the scanner geometry is the
        starting point and registration only corrects residual motion.
    settings : RegistrationSettings, optional
        Defaults to ``RegistrationSettings()``.
    fixed_mask : Volume, optional
        Non-zero where metric samples may be taken (e.g. the anatomy of
        interest); resampled onto the fixed grid by nearest neighbour when the
        grids differ.

    Returns
    -------
    RegistrationResult
        The transform mapping fixed LPS points to moving LPS points, with
        quality figures and a status. Never raises for data-driven failures:
        a result with status ``"failed"`` (and the reasons) is returned instead,
        and the caller should fall back to the scanner geometry
        (``resample_to(moving, fixed.geometry, None)``).

    Notes
    -----
    Multi-resolution is done by hand (per-axis bin-shrinking, see
    ``RegistrationSettings.pyramid_spacing_mm``) because SimpleITK's
    ``SetShrinkFactorsPerLevel`` uses one factor for all axes, which would
    collapse 3-4 mm slices at coarse levels.
    """
    if settings is not None and settings.n_threads != 1:
        return _register_rigid(fixed, moving, settings=settings, fixed_mask=fixed_mask)
    previous = sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    try:
        return _register_rigid(fixed, moving, settings=settings, fixed_mask=fixed_mask)
    finally:
        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(previous)


def _register_rigid(
    fixed: Volume,
    moving: Volume,
    *,
    settings: RegistrationSettings | None = None,
    fixed_mask: Volume | None = None,
) -> RegistrationResult:

    s = settings if settings is not None else RegistrationSettings()
    t0 = time.perf_counter()
    if not s.enabled:
        log.info("registration disabled: using the scanner geometry")
        return RegistrationResult(status=RegistrationStatus.SKIPPED,
                                  reasons=("registration disabled in settings",), settings=s)

    def fail(reason: str, center: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> RegistrationResult:
        log.warning("registration failed: %s", reason)
        return RegistrationResult(center_lps_mm=center, status=RegistrationStatus.FAILED,
                                  reasons=(reason,), elapsed_s=time.perf_counter() - t0, settings=s)

    f_img = _normalised_image(fixed, s.clip_percentiles)
    m_img = _normalised_image(moving, s.clip_percentiles)
    if f_img is None or m_img is None:
        return fail(f"{'fixed' if f_img is None else 'moving'} image is constant")
    mask = _mask_image(fixed_mask, fixed) if fixed_mask is not None else None
    if mask is not None and not np.any(sitk.GetArrayViewFromImage(mask)):
        return fail("fixed mask is empty")
    center = _center_lps(f_img, mask)

    tx = sitk.Euler3DTransform()
    tx.SetCenter(center)
    identity = sitk.Euler3DTransform(tx)
    iterations = 0
    stop = ""
    last = len(s.pyramid_spacing_mm) - 1
    f_lvl = m_lvl = f_img
    try:
        for level, (target, sigma) in enumerate(zip(s.pyramid_spacing_mm, s.smoothing_sigmas_mm,
                                                    strict=True)):
            f_lvl = _level_image(f_img, target, sigma)
            m_lvl = _level_image(m_img, target, sigma)
            reg = _method(s, level, f_lvl)
            if mask is not None:
                reg.SetMetricFixedMask(mask)
            reg.SetInitialTransform(tx, inPlace=True)
            reg.Execute(f_lvl, m_lvl)
            iterations += reg.GetOptimizerIteration()
            stop = reg.GetOptimizerStopConditionDescription()
            log.debug("level %d (%.1f mm): %d iterations, metric %.4f, params %s; %s", level, target,
                      reg.GetOptimizerIteration(), reg.GetMetricValue(), tx.GetParameters(), stop)
        metric_before = _metric(s, last, f_lvl, m_lvl, mask, identity)
        metric_after = _metric(s, last, f_lvl, m_lvl, mask, tx)
    except RuntimeError as exc:  # ITK: e.g. "All samples map outside moving image buffer"
        msg = str(exc).strip().splitlines()
        return fail(f"ITK registration error: {msg[-1] if msg else exc!r}", center)

    notes: list[str] = []
    if metric_before <= metric_after <= metric_before + s.metric_tolerance * abs(metric_before):
        # the optimiser found nothing better than where it started: keep the scanner geometry
        notes.append(f"no improvement of Mattes MI ({metric_before:.4f} -> {metric_after:.4f}): "
                     "scanner geometry kept")
        tx, metric_after = identity, metric_before
    nmi_b, _ = _overlap_figures(f_lvl, m_lvl, mask, identity)
    nmi_a, overlap = _overlap_figures(f_lvl, m_lvl, mask, tx)
    rot, trans = _euler_params(tx)
    result = RegistrationResult(
        rotation_deg=rot, translation_mm=trans, center_lps_mm=center,
        metric_before=metric_before, metric_after=metric_after, nmi_before=nmi_b, nmi_after=nmi_a,
        overlap_fraction=overlap, iterations=iterations, stop_condition=stop, settings=s,
    )
    status, reasons = _judge(result, s)
    elapsed = time.perf_counter() - t0
    result = replace(result, status=status, reasons=(*notes, *reasons), elapsed_s=elapsed)
    log.log(logging.INFO if status is RegistrationStatus.OK else logging.WARNING,
            "rigid registration %s in %.2f s: rotation %.2f deg, translation %.2f mm, "
            "MI %.4f -> %.4f, NMI %.4f -> %.4f%s", status, elapsed, result.rotation_angle_deg,
            result.translation_norm_mm, metric_before, metric_after, nmi_b, nmi_a,
            f" ({'; '.join(result.reasons)})" if result.reasons else "")
    return result


# --------------------------------------------------------------------------- resampling


def resample_to(
    moving: Volume,
    reference: Geometry,
    result: RegistrationResult | None = None,
    *,
    interpolation: str | Interpolation = "linear",
    default_value: float = 0.0,
) -> Volume:
    """Resample ``moving`` onto the ``reference`` grid through a registration result.

    Parameters
    ----------
    moving : Volume
        The image to resample (e.g. the T1, or a label map on the T1 grid).
    reference : Geometry
        Output grid (e.g. ``stir.geometry``).
    result : RegistrationResult, optional
        Transform mapping reference-space LPS points to moving LPS points.
        ``None`` uses the scanner geometry (identity in world space). The
        transform is applied whatever its status; a ``"failed"`` result is
        logged as a warning -- pass ``None`` to fall back.
    interpolation : {"linear", "bspline", "nearest"}
        Use ``"nearest"`` for label maps.
    default_value : float
        Value of output voxels that fall outside ``moving``.

    Returns
    -------
    Volume
        On ``reference``; float32 for ``"linear"``/``"bspline"``, the input
        dtype for ``"nearest"``. ``meta`` is copied from ``moving``.
    """
    interp = _one_of("interpolation", interpolation, Interpolation)
    if result is not None and result.status is RegistrationStatus.FAILED:
        log.warning("resampling with a registration result whose status is 'failed' (%s)",
                    "; ".join(result.reasons))
    arr = np.asarray(moving.array)
    out_dtype = arr.dtype if interp is Interpolation.NEAREST else np.dtype(np.float32)
    if interp is not Interpolation.NEAREST:
        arr = arr.astype(np.float32, copy=False)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    img = to_sitk(Volume(arr, moving.geometry))
    tx = result.to_sitk_transform() if result is not None else sitk.Transform(3, sitk.sitkIdentity)
    f = sitk.ResampleImageFilter()
    f.SetSize([int(n) for n in reference.shape])
    f.SetOutputSpacing(reference.spacing_mm)
    f.SetOutputOrigin(reference.origin_lps_mm)
    f.SetOutputDirection([float(x) for x in reference.direction.ravel()])
    f.SetTransform(tx)
    f.SetInterpolator(_SITK_INTERPOLATORS[interp])
    f.SetDefaultPixelValue(float(default_value))
    f.SetOutputPixelType(img.GetPixelID())
    out = from_sitk(f.Execute(img), meta=moving.meta)
    return out.with_array(out.array.astype(out_dtype, copy=False))
