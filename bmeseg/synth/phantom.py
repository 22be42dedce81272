"""The fine-grid tissue model shared by every anatomy, and the shape toolkit.

A :class:`Phantom` is a set of co-registered maps on one fine isotropic grid
in patient coordinates (LPS, mm; identity direction, so ``i``, ``j``, ``k``
run along L, P, S). Anatomies (:mod:`bmeseg.synth.knee`, ...) paint tissue
labels into it with smooth implicit shapes; lesions and mimics are inserted
with :func:`insert_lesion` and friends.

Implicit shapes return an *approximate signed distance* in mm (negative
inside), computed on an open grid restricted to the shape's bounding box, so
that building a phantom costs a few seconds, not minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage as ndi

from ..volume import Geometry
from .tissues import TISSUE_COMPARTMENT, Compartment, SequenceParams, Tissue, compartment_signal

__all__ = ["BONE_NAMES", "LesionTruth", "Phantom", "FineGrid"]

#: bone label values used in the bone map (0 = not bone)
BONE_NAMES: dict[int, str] = {1: "femur", 2: "tibia", 3: "patella", 4: "fibula"}

F32 = np.float32
Block = tuple[tuple[slice, slice, slice], NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]


# --------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class FineGrid:
    """An axis-aligned isotropic LPS grid: ``lo_lps_mm`` is the centre of voxel (0, 0, 0)."""

    lo_lps_mm: tuple[float, float, float]
    shape: tuple[int, int, int]
    res_mm: float

    @classmethod
    def covering(cls, lo: ArrayLike, hi: ArrayLike, res_mm: float) -> FineGrid:
        """Smallest grid with voxel centres spanning the box ``[lo, hi]`` (LPS mm)."""
        lo_a = np.asarray(lo, dtype=float)
        hi_a = np.asarray(hi, dtype=float)
        n = np.maximum(np.ceil((hi_a - lo_a) / res_mm).astype(int) + 1, 1)
        return cls(tuple(float(v) for v in lo_a), tuple(int(v) for v in n), float(res_mm))  # type: ignore[arg-type]

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.shape, (self.res_mm,) * 3, self.lo_lps_mm, np.eye(3))

    def axis(self, a: int) -> NDArray[np.float32]:
        """LPS coordinate (mm) of the voxel centres along axis ``a``."""
        return (self.lo_lps_mm[a] + self.res_mm * np.arange(self.shape[a])).astype(F32)

    def block(self, lo: ArrayLike, hi: ArrayLike) -> Block | None:
        """Slices and open-grid coordinates (each broadcastable to the block) for a box.

        Returns ``None`` when the box misses the grid.
        """
        lo_i = np.floor((np.asarray(lo, float) - self.lo_lps_mm) / self.res_mm).astype(int)
        hi_i = np.ceil((np.asarray(hi, float) - self.lo_lps_mm) / self.res_mm).astype(int) + 1
        lo_i = np.clip(lo_i, 0, self.shape)
        hi_i = np.clip(hi_i, 0, self.shape)
        if np.any(hi_i <= lo_i):
            return None
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo_i, hi_i, strict=True))
        x = self.axis(0)[sl[0]][:, None, None]
        y = self.axis(1)[sl[1]][None, :, None]
        z = self.axis(2)[sl[2]][None, None, :]
        return sl, x, y, z  # type: ignore[return-value]

    def full(self) -> Block:
        b = self.block(self.lo_lps_mm, np.asarray(self.lo_lps_mm) + self.res_mm * (np.asarray(self.shape) - 1))
        assert b is not None
        return b


# ---------------------------------------------------------------- implicit shapes


def sd_ellipsoid(x: NDArray[Any], y: NDArray[Any], z: NDArray[Any], c: ArrayLike,
                 r: ArrayLike) -> NDArray[np.float32]:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid (centre ``c``, radii ``r``)."""
    c = np.asarray(c, dtype=F32)
    r = np.asarray(r, dtype=F32)
    px, py, pz = x - c[0], y - c[1], z - c[2]
    k0 = np.sqrt((px / r[0]) ** 2 + (py / r[1]) ** 2 + (pz / r[2]) ** 2)
    k1 = np.sqrt((px / r[0] ** 2) ** 2 + (py / r[1] ** 2) ** 2 + (pz / r[2] ** 2) ** 2)
    return (k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)).astype(F32)


def sd_ellipse_cylinder(x: NDArray[Any], y: NDArray[Any], cx: ArrayLike, cy: ArrayLike, rx: ArrayLike,
                        ry: ArrayLike) -> NDArray[np.float32]:
    """Approximate signed distance (mm) to an infinite cylinder along S with elliptic section.

    The centre and radii may vary along ``z`` (pass arrays shaped ``(1, 1, nz)``).
    """
    ax: Any = rx  # floats or arrays broadcastable to x, y
    ay: Any = ry
    px, py = x - cx, y - cy
    k0 = np.sqrt((px / ax) ** 2 + (py / ay) ** 2)
    k1 = np.sqrt((px / np.square(ax)) ** 2 + (py / np.square(ay)) ** 2)
    return (k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)).astype(F32)


def sd_capsule(x: NDArray[Any], y: NDArray[Any], z: NDArray[Any], a: ArrayLike, b: ArrayLike,
               radius: float, *, squash: ArrayLike = (1.0, 1.0, 1.0)) -> NDArray[np.float32]:
    """Signed distance to a capsule (segment ``a``-``b`` swept by a sphere of ``radius`` mm).

    ``squash`` divides the coordinates (relative to ``a``) first, which turns the
    sphere into an ellipsoid: e.g. ``(3, 1, 1)`` makes a tendon three times as wide in L-R.
    """
    s = np.asarray(squash, dtype=F32)
    a = np.asarray(a, dtype=F32)
    ba = (np.asarray(b, dtype=F32) - a) / s
    px, py, pz = (x - a[0]) / s[0], (y - a[1]) / s[1], (z - a[2]) / s[2]
    h = np.clip((px * ba[0] + py * ba[1] + pz * ba[2]) / float(ba @ ba), 0.0, 1.0)
    d = np.sqrt((px - h * ba[0]) ** 2 + (py - h * ba[1]) ** 2 + (pz - h * ba[2]) ** 2)
    return (d - radius).astype(F32)


def sd_box(x: NDArray[Any], y: NDArray[Any], z: NDArray[Any], lo: ArrayLike, hi: ArrayLike) -> NDArray[np.float32]:
    """Signed distance to an axis-aligned box ``[lo, hi]`` (mm)."""
    lo = np.asarray(lo, dtype=F32)
    hi = np.asarray(hi, dtype=F32)
    c = (lo + hi) / 2
    h = (hi - lo) / 2
    qx, qy, qz = np.abs(x - c[0]) - h[0], np.abs(y - c[1]) - h[1], np.abs(z - c[2]) - h[2]
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2 + np.maximum(qz, 0) ** 2)
    inside = np.minimum(np.maximum(qx, np.maximum(qy, qz)), 0)
    return (outside + inside).astype(F32)


def smin(a: NDArray[Any], b: NDArray[Any], k: float) -> NDArray[np.float32]:
    """Smooth union of two signed distances (blend radius ``k`` mm)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return (b * (1 - h) + a * h - k * h * (1 - h)).astype(F32)


def smax(a: NDArray[Any], b: NDArray[Any], k: float) -> NDArray[np.float32]:
    """Smooth intersection of two signed distances (use ``smax(a, -b, k)`` to subtract ``b``)."""
    return (-smin(-a, -b, k)).astype(F32)


def smoothstep(e0: float, e1: float, x: NDArray[Any]) -> NDArray[np.float32]:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(F32)


def sigmoid(x: NDArray[Any]) -> NDArray[np.float32]:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(F32)


def smooth_noise(points: NDArray[np.float64], rng: np.random.Generator, *, wavelength_mm: float,
                 n_terms: int = 6) -> NDArray[np.float32]:
    """A smooth random field at ``points`` ``(N, 3)`` (LPS mm), roughly zero-mean, unit-std."""
    out = np.zeros(len(points), dtype=np.float64)
    for _ in range(n_terms):
        v = rng.normal(size=3)
        v *= (2 * np.pi / wavelength_mm) * rng.uniform(0.6, 1.4) / np.linalg.norm(v)
        out += np.cos(points @ v + rng.uniform(0, 2 * np.pi))
    return (out * np.sqrt(2.0 / n_terms)).astype(F32)


# ---------------------------------------------------------------------- phantom


@dataclass(frozen=True)
class LesionTruth:
    """One inserted BME lesion (fine-grid truth, phantom/fluid-sensitive frame).

    ``volume_ml`` counts fine voxels with membership >= 0.5 inside the bone's marrow.
    ``max_depth_mm`` (anatomies that know their joint space, e.g. SIJ) is the largest
    distance of a lesion voxel from that joint space; ``None`` where not measured.
    """

    id: int
    bone: str
    location: str
    volume_ml: float
    centroid_lps_mm: tuple[float, float, float]
    center_lps_mm: tuple[float, float, float]
    radius_mm: float
    edema_fraction: float
    touches_subchondral_plate: bool
    max_depth_mm: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "bone": self.bone,
            "location": self.location,
            "volume_ml": round(self.volume_ml, 4),
            "centroid_lps_mm": [round(v, 3) for v in self.centroid_lps_mm],
            "center_lps_mm": [round(v, 3) for v in self.center_lps_mm],
            "radius_mm": round(self.radius_mm, 3),
            "edema_fraction": round(self.edema_fraction, 3),
            "touches_subchondral_plate": self.touches_subchondral_plate,
        }
        if self.max_depth_mm is not None:  # absent from knee truth (kept byte-identical)
            out["max_depth_mm"] = round(self.max_depth_mm, 2)
            out["deep"] = bool(self.max_depth_mm >= 10.0)
        return out


@dataclass(eq=False)
class Phantom:
    """Fine-grid truth of one synthetic subject.

    All arrays are indexed ``[i, j, k]`` along L, P, S (see :class:`FineGrid`) and
    share ``grid.shape``.

    Attributes
    ----------
    grid : FineGrid
    tissue : ndarray of uint8
        :class:`~bmeseg.synth.tissues.Tissue` labels.
    bone : ndarray of uint8
        Bone ids (:data:`BONE_NAMES`; cortex and marrow), 0 elsewhere.
    fat_fraction : ndarray of float32
        Fat fraction of the *non-edematous* part of marrow voxels (0-1).
    edema : ndarray of float32
        Edema-water fraction of marrow voxels (0-1); the rest is normal marrow.
    lesion : ndarray of uint8
        Lesion id (1...) where lesion membership >= 0.5, else 0.
    lesions : list of LesionTruth
    mimics : list of dict
        What was inserted to look like BME without being it (cysts, red marrow...).
    landmarks : dict
        Named LPS points (mm) of the anatomy (``'center'``: default field-of-view centre).
    bone_names : dict
        Bone id -> name.
    marrow_water : Compartment
        Relaxation of the marrow's water: yellow-marrow water (knee) or the mixed, cellular marrow
        of the axial skeleton (SIJ).
    """

    grid: FineGrid
    tissue: NDArray[np.uint8]
    bone: NDArray[np.uint8]
    fat_fraction: NDArray[np.float32]
    edema: NDArray[np.float32]
    lesion: NDArray[np.uint8]
    lesions: list[LesionTruth] = field(default_factory=list)
    mimics: list[dict[str, Any]] = field(default_factory=list)
    landmarks: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    bone_names: dict[int, str] = field(default_factory=lambda: dict(BONE_NAMES))
    marrow_water: Compartment = Compartment.MARROW_WATER

    @classmethod
    def empty(cls, grid: FineGrid) -> Phantom:
        z8 = np.zeros(grid.shape, dtype=np.uint8)
        return cls(grid, z8, z8.copy(), np.zeros(grid.shape, F32), np.zeros(grid.shape, F32), z8.copy())

    @property
    def voxel_ml(self) -> float:
        return self.grid.res_mm**3 / 1000.0

    def signal_map(self, seq: SequenceParams, field_strength_t: float) -> NDArray[np.float32]:
        """Noise-free signal of every fine voxel, ``float32`` of ``grid.shape``.

        Signed for STIR (take the magnitude after partial-volume averaging);
        marrow is ``(1 - e) [ff S_fat + (1 - ff) S_water] + e S_edema``.
        """
        s = compartment_signal(seq, field_strength_t)
        lut = np.zeros(256, dtype=F32)
        for t, comp in TISSUE_COMPARTMENT.items():
            lut[int(t)] = s[comp]
        out = lut[self.tissue]
        m = self.tissue == Tissue.MARROW
        ff = self.fat_fraction[m]
        e = self.edema[m]
        normal = ff * s[Compartment.FAT] + (1.0 - ff) * s[self.marrow_water]
        out[m] = (1.0 - e) * normal + e * s[Compartment.EDEMA_WATER]
        return out

    def fat_content(self) -> NDArray[np.float32]:
        """Fat-proton fraction of every fine voxel (``float32``, ``grid.shape``).

        1 for fat and fat pads, ``(1 - edema) * fat_fraction`` in marrow, 0 elsewhere:
        the weight of the fat compartment in :meth:`signal_map`.
        """
        out = np.isin(self.tissue, (Tissue.FAT, Tissue.FAT_PAD)).astype(F32)
        m = self.tissue == Tissue.MARROW
        out[m] = (1.0 - self.edema[m]) * self.fat_fraction[m]
        return out

    def marrow_of(self, bone_id: int, sl: tuple[slice, ...] | None = None) -> NDArray[np.bool_]:
        sl = sl or (slice(None),) * 3
        return (self.tissue[sl] == Tissue.MARROW) & (self.bone[sl] == bone_id)

    # ---------------------------------------------------------------- lesions

    def insert_lesion(
        self,
        *,
        bone_id: int,
        volume_ml: float,
        site_lps_mm: ArrayLike,
        rng: np.random.Generator,
        location: str = "",
        edema_fraction: float = 0.95,
        edge_mm: float = 1.0,
        lobulation: float = 0.08,
        min_depth_mm: float = 0.0,
        joint: NDArray[np.bool_] | None = None,
    ) -> LesionTruth:
        """Insert a soft-edged BME lesion centred under a subchondral site.

        Parameters
        ----------
        bone_id : int
            Bone whose marrow receives the lesion (the lesion is clipped to it).
        volume_ml : float
            Target volume of the membership >= 0.5 region inside marrow, mL.
        site_lps_mm : (3,) array
            A point on (or just under) the subchondral plate, LPS mm. The lesion
            centre is moved into the bone from here by half its radius, so the
            lesion reaches the plate.
        rng : numpy.random.Generator
            Shape randomness (axes ratios, orientation, lobulation).
        edema_fraction : float
            Edema-water fraction at the lesion core (0-1).
        edge_mm : float
            Width (logistic scale, mm) of the ill-defined border.
        lobulation : float
            Relative amplitude of the border's low-frequency bumps.
        min_depth_mm : float
            Push the centre into the bone far enough for the lesion to reach this
            depth below the site (e.g. 12 for a SPARCC "deep" lesion, >= 10 mm from
            the articular surface); 0 = the default subchondral placement
            (centre half a radius inside).
        joint : ndarray of bool, shape ``grid.shape``, optional
            Joint space the lesion depth is measured from (``LesionTruth.max_depth_mm``).

        Returns
        -------
        LesionTruth
        """
        if volume_ml <= 0:
            raise ValueError(f"'volume_ml' must be > 0; got {volume_ml}")
        lid = len(self.lesions) + 1
        site = np.asarray(site_lps_mm, dtype=float)
        axes = np.array([1.0, rng.uniform(0.7, 1.0), rng.uniform(0.6, 0.95)])
        rot = _random_rotation(rng)
        lob_dirs = rng.normal(size=(3, 3))
        lob_dirs /= np.linalg.norm(lob_dirs, axis=1, keepdims=True)
        lob_amp = lobulation * rng.uniform(0.5, 1.0, size=3)
        lob_freq = rng.uniform(0.6, 1.2, size=3)
        lob_phase = rng.uniform(0, 2 * np.pi, size=3)
        vox_target = volume_ml / self.voxel_ml
        r_est = (3 * volume_ml * 1000 / (4 * np.pi * float(np.prod(axes)))) ** (1 / 3) * 1.15
        inward = self._inward(site, bone_id, radius_mm=max(12.0, 1.5 * r_est))
        center = site
        rho = sl = marrow = None
        for _ in range(3):
            if min_depth_mm > 0:
                center = site + inward * max(0.5 * r_est, min_depth_mm - 0.9 * r_est)
            else:
                center = site + inward * 0.5 * r_est
            half = 1.45 * r_est / (1 - lob_amp.sum()) * 1.0 + 4 * edge_mm + 2
            blk = self.grid.block(center - half, center + half)
            if blk is None:
                raise ValueError(f"lesion site {site.tolist()} is outside the phantom grid")
            sl, x, y, z = blk
            q = np.stack(np.broadcast_arrays(x - center[0], y - center[1], z - center[2]), axis=-1)
            q = (q @ rot.astype(F32)) / axes.astype(F32)
            r = np.sqrt(np.sum(q * q, axis=-1))
            u = q / np.maximum(r, 1e-6)[..., None]
            f = 1.0 + sum(lob_amp[n] * np.cos(np.pi * lob_freq[n] * (u @ lob_dirs[n].astype(F32)) + lob_phase[n])
                          for n in range(3))
            rho = (r / f).astype(F32)
            marrow = self.marrow_of(bone_id, sl) & (self.lesion[sl] == 0)
            vals = np.sort(rho[marrow])
            if vals.size <= vox_target:
                raise ValueError(f"bone {bone_id} has too little marrow near {site.tolist()} for "
                                 f"a {volume_ml} mL lesion")
            k = round(vox_target)
            r_new = float(0.5 * (vals[k - 1] + vals[k])) if k > 0 else float(vals[0]) * 0.5
            if abs(r_new - r_est) < 0.02 * r_est:
                r_est = r_new
                break
            r_est = r_new
        assert rho is not None and sl is not None and marrow is not None
        member = sigmoid((r_est - rho) / edge_mm)
        e_view = self.edema[sl]
        e_view[marrow] = np.maximum(e_view[marrow], edema_fraction * member[marrow])
        inside = marrow & (rho <= r_est)
        self.lesion[sl][inside] = lid
        idx = np.argwhere(inside)
        n_vox = len(idx)
        offs = np.array([s.start for s in sl])
        centroid = self.grid.geometry.index_to_lps(idx.mean(axis=0) + offs) if n_vox else center
        cortex = np.zeros_like(inside)
        cortex |= self.tissue[sl] == Tissue.CORTEX
        touches = bool(np.any(ndi.binary_dilation(inside, iterations=2) & cortex))
        depth = None
        if joint is not None:
            jb = joint[sl]
            if jb.any() and n_vox:
                depth = float(np.max(ndi.distance_transform_edt(~jb, sampling=self.grid.res_mm)[inside]))
        truth = LesionTruth(
            id=lid,
            bone=self.bone_names.get(bone_id, str(bone_id)),
            location=location,
            volume_ml=n_vox * self.voxel_ml,
            centroid_lps_mm=tuple(float(v) for v in centroid),  # type: ignore[arg-type]
            center_lps_mm=tuple(float(v) for v in center),  # type: ignore[arg-type]
            radius_mm=r_est,
            edema_fraction=edema_fraction,
            touches_subchondral_plate=touches,
            max_depth_mm=depth,
        )
        self.lesions.append(truth)
        return truth

    def _inward(self, site: NDArray[np.float64], bone_id: int, *, radius_mm: float) -> NDArray[np.float64]:
        """Unit vector from ``site`` towards the marrow centroid of the bone within ``radius_mm``."""
        blk = self.grid.block(site - radius_mm, site + radius_mm)
        if blk is None:
            raise ValueError(f"site {site.tolist()} is outside the phantom grid")
        sl = blk[0]
        idx = np.argwhere(self.marrow_of(bone_id, sl))
        if len(idx) == 0:
            raise ValueError(f"no marrow of bone {bone_id} near {site.tolist()}")
        offs = np.array([s.start for s in sl])
        c = self.grid.geometry.index_to_lps(idx.mean(axis=0) + offs)
        v = c - site
        n = np.linalg.norm(v)
        return v / n if n > 1e-6 else np.array([0.0, 0.0, 1.0])

    def subchondral_sites(self, bone_id: int, *, articular: NDArray[np.bool_] | None = None,
                          where: Callable[[NDArray[np.float64]], NDArray[np.bool_]] | None = None
                          ) -> NDArray[np.float64]:
        """LPS points (``(N, 3)`` mm) of the bone's subchondral plate.

        The plate is the bone's cortex within 1.5 mm of ``articular`` (default:
        cartilage), optionally filtered by ``where(points) -> bool mask``.
        """
        art = (self.tissue == Tissue.CARTILAGE) if articular is None else articular
        bone = self.bone == bone_id
        ii = np.argwhere(bone)
        lo, hi = ii.min(axis=0), ii.max(axis=0) + 1
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        near = ndi.binary_dilation(art[sl], iterations=max(1, round(1.5 / self.grid.res_mm)))
        plate = near & (self.tissue[sl] == Tissue.CORTEX) & bone[sl]
        pts = self.grid.geometry.index_to_lps(np.argwhere(plate) + lo)
        if where is not None and len(pts):
            pts = pts[where(pts)]
        return pts


def _random_rotation(rng: np.random.Generator) -> NDArray[np.float64]:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q
