"""Sacroiliac joints (SIJ): sacrum, both ilia, L5 and the pelvic soft tissue, from implicit shapes.

Coordinates
-----------
The anatomy is drawn in a *sacral frame* ``(u, v, w)`` (mm) tilted about the
L axis by ``tilt`` (about 25 degrees), so that ``w`` runs along the sacrum's
long axis (superior and anterior) and ``v`` is perpendicular to the dorsal S2
cortex (positive = dorsal). A semicoronal series (coronal tilted by
``+tilt`` about L, ``fluid_oblique_deg=(tilt, 0, 0)``) is therefore parallel
to the dorsal S2 cortex. The frame's origin is the centre of the S2 body at
LPS (0, 0, 0); ``u`` is the LPS ``x`` (patient left positive)::

    y = v cos(tilt) - w sin(tilt),   z = v sin(tilt) + w cos(tilt)

Sizes are those of an average adult pelvis: S1 top endplate at ``w = 45``,
auricular (synovial) joint from ``w = -38`` to ``w = 40``, sacrum half-width
at the joint 44-54 mm, joint space 2.6 mm (cartilage + fluid line) widening
dorsally into the interosseous ligament.

Bones (:data:`SIJ_BONE_NAMES`): 1 sacrum, 2 ilium_left, 3 ilium_right, 4 L5, 5 L4.
Adult axial-skeleton marrow is *mixed* red/yellow marrow: fat fraction ~0.27
with the cellular marrow's own water (``Compartment.MIXED_MARROW_WATER``), calibrated
to the real SIJ scans: T1 at ~0.4 of the muscle-to-fat range, STIR ~1.2x muscle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage as ndi

from .phantom import (
    F32,
    FineGrid,
    Phantom,
    sd_capsule,
    sd_ellipse_cylinder,
    sd_ellipsoid,
    sigmoid,
    smax,
    smin,
    smooth_noise,
    smoothstep,
)
from .tissues import Compartment, Tissue

__all__ = [
    "SIJ_BONE_NAMES",
    "SIJ_CENTER_LPS_MM",
    "SIJ_EXTENT_LPS_MM",
    "SIJ_LOCATIONS",
    "SIJ_TILT_DEG",
    "build_sij",
    "sij_lesion_site",
]

log = logging.getLogger(__name__)

SACRUM, ILIUM_LEFT, ILIUM_RIGHT, L5, L4 = 1, 2, 3, 4, 5
#: bone label values of an SIJ phantom (0 = not bone)
SIJ_BONE_NAMES: dict[int, str] = {SACRUM: "sacrum", ILIUM_LEFT: "ilium_left", ILIUM_RIGHT: "ilium_right",
                                  L5: "L5", L4: "L4"}
#: box (lo, hi) outside of which the SIJ model holds only air, LPS mm
SIJ_EXTENT_LPS_MM = ((-200.0, -190.0, -230.0), (200.0, 150.0, 230.0))
#: nominal tilt of the sacrum (and of the semicoronal plane) about L, degrees
SIJ_TILT_DEG = 25.0
#: default field-of-view centre: 4 mm dorsal of the S2 body centre (sacral frame (0, 4, 0))
SIJ_CENTER_LPS_MM = (0.0, round(4.0 * float(np.cos(np.deg2rad(SIJ_TILT_DEG))), 3),
                     round(4.0 * float(np.sin(np.deg2rad(SIJ_TILT_DEG))), 3))
#: SPARCC-style quadrant names: side x iliac/sacral x upper/lower
SIJ_LOCATIONS: tuple[str, ...] = tuple(f"{side}_{part}_{half}" for side in ("LEFT", "RIGHT")
                                       for part in ("ILIAC", "SACRAL") for half in ("UPPER", "LOWER"))

#: joint (auricular surface) extent along the sacral axis w, mm
_JOINT_W = (-38.0, 40.0)
_CORTEX_MM = {SACRUM: 1.3, ILIUM_LEFT: 1.6, ILIUM_RIGHT: 1.6, L5: 1.3, L4: 1.3}


# ---------------------------------------------------------------- sacral frame


class _Frame:
    """Rotation about L between LPS and the sacral frame (see module docstring)."""

    def __init__(self, tilt_deg: float) -> None:
        t = np.deg2rad(tilt_deg)
        self.tilt_deg = float(tilt_deg)
        self.c, self.s = float(np.cos(t)), float(np.sin(t))

    def uvw(self, x: NDArray[Any], y: NDArray[Any], z: NDArray[Any]
            ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        """Sacral-frame coordinates of open-grid LPS coordinates (``v``, ``w`` shaped like ``y + z``)."""
        v = (y * self.c + z * self.s).astype(F32)
        w = (-y * self.s + z * self.c).astype(F32)
        return x.astype(F32), v, w

    def to_lps(self, uvw: ArrayLike) -> NDArray[np.float64]:
        """LPS points (``(..., 3)`` mm) of sacral-frame points."""
        p = np.asarray(uvw, dtype=float)
        u, v, w = p[..., 0], p[..., 1], p[..., 2]
        return np.stack([u, v * self.c - w * self.s, v * self.s + w * self.c], axis=-1)

    def from_lps(self, pts: ArrayLike) -> NDArray[np.float64]:
        """Sacral-frame points (``(..., 3)``) of LPS points."""
        p = np.asarray(pts, dtype=float)
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        return np.stack([x, y * self.c + z * self.s, -y * self.s + z * self.c], axis=-1)

    def block(self, grid: FineGrid, lo: ArrayLike, hi: ArrayLike) -> tuple[Any, ...] | None:
        """``grid.block`` of the LPS bounding box of a sacral-frame box, plus its ``(u, v, w)``."""
        lo_a, hi_a = np.asarray(lo, float), np.asarray(hi, float)
        corners = np.array([[a, b, c] for a in (lo_a[0], hi_a[0]) for b in (lo_a[1], hi_a[1])
                            for c in (lo_a[2], hi_a[2])])
        p = self.to_lps(corners)
        blk = grid.block(p.min(axis=0), p.max(axis=0))
        if blk is None:
            return None
        sl, x, y, z = blk
        u, v, w = self.uvw(x, y, z)
        return sl, u, v, w


def _min_sd(g: FineGrid, fr: _Frame, sl: tuple[slice, ...], shape: tuple[int, ...],
            items: Sequence[tuple[Callable[..., NDArray[np.float32]], ArrayLike, ArrayLike]]) -> NDArray[np.float32]:
    """Union (minimum) of signed distances on block ``sl``, each evaluated only near its own box.

    ``items`` holds ``(f, lo, hi)``: ``f(u, vv, w)`` is a signed distance in the sacral frame
    with ``vv = v - c(w)`` (depth from the spinal centreline) and ``lo``/``hi`` bound the
    shape in ``(u, vv, w)``. Far from every shape the result is 99 mm.
    """
    out = np.full(shape, 99.0, dtype=F32)
    for f, lo, hi in items:
        lo_a, hi_a = np.asarray(lo, float), np.asarray(hi, float)
        ws = np.array([lo_a[2], hi_a[2], float(np.clip(0.0, lo_a[2], hi_a[2]))])
        cw = _c(ws)
        blk = fr.block(g, (lo_a[0], lo_a[1] + float(cw.min()), lo_a[2]), (hi_a[0], hi_a[1] + float(cw.max()), hi_a[2]))
        if blk is None:
            continue
        sub = blk[0]
        rel, ok = [], True
        for a_, b_ in zip(sub, sl, strict=True):
            lo_i, hi_i = max(a_.start, b_.start), min(a_.stop, b_.stop)
            if hi_i <= lo_i:
                ok = False
                break
            rel.append(slice(lo_i - b_.start, hi_i - b_.start))
        if not ok:
            continue
        x = g.axis(0)[sl[0]][rel[0]][:, None, None]
        y = g.axis(1)[sl[1]][rel[1]][None, :, None]
        z = g.axis(2)[sl[2]][rel[2]][None, None, :]
        u, v, w = fr.uvw(x, y, z)
        view = out[tuple(rel)]
        np.minimum(view, f(u, v - _c(w), w), out=view)
    return out


def _capsule(a: tuple[float, float, float], b: tuple[float, float, float], r: float,
             squash: tuple[float, float, float] = (1.0, 1.0, 1.0)
             ) -> tuple[Callable[..., NDArray[np.float32]], NDArray[np.float64], NDArray[np.float64]]:
    ext = r * max(squash) + 1.0
    lo = np.minimum(a, b) - ext
    hi = np.maximum(a, b) + ext
    return (lambda u, vv, w: sd_capsule(u, vv, w, a, b, r, squash=squash)), lo, hi


def _interp(w: NDArray[Any], ws: list[float], vals: list[float]) -> NDArray[np.float32]:
    return np.interp(w, ws, vals).astype(F32)


# centreline (dorsal-ventral position of the vertebral bodies) and sacral dimensions, all vs w
def _c(w: NDArray[Any]) -> NDArray[np.float32]:
    return (-4.0 - 0.003 * w * w).astype(F32)


def _rvb(w: NDArray[Any]) -> NDArray[np.float32]:  # AP half-depth of the sacral bodies
    return _interp(w, [-75, -40, 0, 45], [5, 9, 13, 16])


def _rub(w: NDArray[Any]) -> NDArray[np.float32]:  # half-width of the sacral bodies
    return _interp(w, [-75, -45, -20, 10, 45], [7, 12, 17, 22, 25])


def _canal(w: NDArray[Any]) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Sacral canal centre (relative to the centreline) and half-width / half-depth."""
    cu = _interp(w, [-70, -30, 0, 45], [4, 8, 11, 13])
    cv = _interp(w, [-70, 0, 45], [3, 5, 6])
    return _rvb(w) + cv + 2.0, cu, cv


def _h0(w: NDArray[Any]) -> NDArray[np.float32]:  # sacral half-width at the joint (ventral edge)
    return _interp(w, [-70, -45, -30, -10, 15, 42], [8, 20, 32, 44, 50, 54])


def _half_width(vv: NDArray[Any], w: NDArray[Any]) -> NDArray[np.float32]:
    """Sacral joint surface: half-width at depth ``vv`` (from the centreline) and level ``w``.

    The sacrum is a keystone, wider ventrally than dorsally.
    """
    return (_h0(w) - 0.3 * vv).astype(F32)


def _gap(vv: NDArray[Any], fluid_mm: float) -> NDArray[np.float32]:
    """Joint space width: cartilage + fluid ventrally, widening dorsally (interosseous ligament)."""
    return (2.0 + fluid_mm + 3.4 * smoothstep(10.0, 22.0, vv)).astype(F32)


# ------------------------------------------------------------------ bone SDFs


def _sd_sacrum(u: NDArray[Any], v: NDArray[Any], w: NDArray[Any]) -> NDArray[np.float32]:
    a = np.abs(u)
    vv = v - _c(w)
    rvb = _rvb(w)
    body = sd_ellipse_cylinder(u, vv, 0.0, 0.0, _rub(w), rvb)
    body = smax(smax(body, w - 45.0, 2.0), -76.0 - w, 3.0)
    cvc, cu, cv = _canal(w)
    vp = rvb + 2.0 * cv + 5.0 - 0.005 * u * u  # dorsal surface convex from side to side
    lm = smax(smax(a - _half_width(vv, w), vv - vp, 3.0), -0.95 * rvb - vv, 3.0)
    lm = smax(smax(lm, w - (45.0 - 0.12 * a), 3.0), -60.0 - w, 4.0)
    d = smin(body, lm, 3.0)
    canal = smax(sd_ellipse_cylinder(u, vv, 0.0, cvc, cu, cv), -72.0 - w, 2.0)
    return smax(d, -canal, 1.0)


def _sd_ilium(a: NDArray[Any], v: NDArray[Any], w: NDArray[Any], fluid_mm: float) -> NDArray[np.float32]:
    """One ilium; ``a`` = distance from the midline towards that side (mm)."""
    vv = v - _c(w)
    ap = a - (_half_width(vv, w) + _gap(vv, fluid_mm))  # >= 0 lateral of the joint
    blk = sd_ellipsoid(ap, vv, w, (13.0, 4.0, 2.0), (16.0, 30.0, 50.0))
    rw = 60.0 + 0.8 * (w - 35.0) - 0.3 * (vv - 8.0)
    tw = _interp(w, [30, 55, 80, 100], [18, 9, 8, 12])
    wing = np.abs(a - rw) / 1.3 - tw / 2.0
    wing = smax(wing, w - (100.0 - 0.006 * (vv + 15.0) ** 2), 4.0)
    wing = smax(smax(wing, 30.0 - w, 4.0), vv - 45.0, 5.0)
    lower = sd_capsule(a, vv, w, (47.0, 0.0, -28.0), (88.0, -30.0, -92.0), 15.0)
    lower = smin(lower, sd_ellipsoid(a, vv, w, (92.0, -32.0, -98.0), (20.0, 20.0, 18.0)), 6.0)
    d = smin(smin(blk, wing, 8.0), lower, 8.0)
    return smax(d, -ap, 1.0)


def _sd_lumbar(u: NDArray[Any], v: NDArray[Any], w: NDArray[Any], level: int) -> NDArray[np.float32]:
    """L5 (``level=5``, body w 56-84) or L4 (``level=4``, body w 94-122) with its posterior arch."""
    w0 = 56.0 if level == 5 else 94.0
    w1 = w0 + 28.0
    vv = v - _c(w)
    body = smax(smax(sd_ellipse_cylinder(u, vv, 0.0, 0.0, 25.0, 17.0), w - w1, 2.0), w0 - w, 2.0)
    canal = sd_ellipse_cylinder(u, vv, 0.0, 26.0, 12.0, 8.0)
    arch = smax(sd_ellipse_cylinder(u, vv, 0.0, 26.0, 20.0, 15.0), 17.0 - vv, 2.0)
    arch = smax(smax(arch, w - (w1 - 2.0), 2.0), (w0 + 2.0) - w, 2.0)
    spine = sd_capsule(u, vv, w, (0.0, 36.0, w0 + 19.0), (0.0, 56.0, w0 + 6.0), 5.0, squash=(1.0, 1.0, 1.6))
    d = smin(smin(body, arch, 2.0), spine, 3.0)
    return smax(d, -canal, 1.0)


# --------------------------------------------------------------------- builder


def build_sij(
    grid: FineGrid,
    *,
    rng: np.random.Generator,
    joint_fluid: float = 0.3,
    red_marrow: bool = False,
    vessel: bool = True,
    fusion_lines: bool = True,
) -> Phantom:
    """Paint the sacroiliac region into a new :class:`~bmeseg.synth.phantom.Phantom` on ``grid``.

    Parameters
    ----------
    grid : FineGrid
        Fine grid (LPS mm); whatever part of :data:`SIJ_EXTENT_LPS_MM` it covers is built.
    rng : numpy.random.Generator
        Tilt jitter, marrow texture, bowel loops and mimic placement.
    joint_fluid : float
        0-1: width of the fluid line in the synovial joint (0.4 mm at 0, 1.6 mm at 1).
    red_marrow : bool
        Add haematopoietic islands (fat fraction ~0.08, no edema) in the ilia and sacrum.
    vessel : bool
        Common/internal iliac and superior gluteal arteries (flow void) and veins (bright on STIR).
    fusion_lines : bool
        Thin sclerotic lines at the fused S1/S2...S4/S5 levels.

    Returns
    -------
    Phantom
        With ``bone_names`` = :data:`SIJ_BONE_NAMES`, landmarks ``'center'``,
        ``'tilt_deg'`` (the anatomy's sacral tilt, ``(deg, 0, 0)``) and the
        per-side joint mid-level; no lesions (see :func:`sij_lesion_site`).
    """
    ph = Phantom.empty(grid)
    ph.bone_names = dict(SIJ_BONE_NAMES)
    ph.marrow_water = Compartment.MIXED_MARROW_WATER
    tilt = SIJ_TILT_DEG + float(rng.uniform(-3.0, 3.0))
    fr = _Frame(tilt)
    ph.landmarks["center"] = SIJ_CENTER_LPS_MM
    ph.landmarks["tilt_deg"] = (tilt, 0.0, 0.0)
    fluid_mm = 0.4 + 1.2 * float(np.clip(joint_fluid, 0.0, 1.0))
    t = ph.tissue

    _paint_body(ph, fr)
    _paint_bones(ph, fr, fluid_mm=fluid_mm, fusion_lines=fusion_lines)
    _paint_canal_and_roots(ph, fr)
    _paint_pelvis(ph, fr, rng, vessel=vessel)
    _marrow_fat(ph, fr, rng, red_marrow=red_marrow)
    n_joint = int(np.count_nonzero((t == Tissue.CARTILAGE) | (t == Tissue.FLUID)))
    log.debug("SIJ phantom %s: tilt %.1f deg, %d joint voxels", grid.shape, tilt, n_joint)
    return ph


def _paint_body(ph: Phantom, fr: _Frame) -> None:
    """Skin, subcutaneous fat, muscle everywhere deep, a gluteal fat plane."""
    t = ph.tissue
    _, x, y, z = ph.grid.full()
    zs = [-230.0, -120.0, -60.0, 0.0, 80.0, 230.0]
    rx = _interp(z, zs, [175, 185, 180, 172, 160, 150])
    post = _interp(z, zs, [95, 112, 100, 80, 66, 70])
    ant = -175.0
    d = sd_ellipse_cylinder(x, y, 0.0, (post + ant) / 2.0, rx, (post - ant) / 2.0)
    t[d <= 0] = Tissue.SKIN
    t[d <= -1.8] = Tissue.FAT
    sub = 14.0 + 14.0 * smoothstep(-20.0, 60.0, y) * smoothstep(40.0, -60.0, z)
    deep = d <= -sub
    t[deep] = Tissue.MUSCLE
    # fat plane between gluteus maximus and the deeper gluteal muscles
    shell = np.abs(sd_ellipsoid(x, y, z, (0.0, -20.0, -30.0), (150.0, 96.0, 190.0))
                   + 7.0 * np.cos(z / 23.0 + x / 31.0) * np.cos(y / 19.0))
    t[deep & (shell < 1.6) & (y > -40.0) & (np.abs(x) > 45.0)] = Tissue.FAT
    # natal cleft
    cleft = (np.abs(x) < 1.5 + 0.0 * y) & (z < -60.0) & (y > post - 30.0 * smoothstep(-60.0, -110.0, z))
    t[cleft & (d <= 0)] = Tissue.SKIN


def _paint_bones(ph: Phantom, fr: _Frame, *, fluid_mm: float, fusion_lines: bool) -> None:
    g = ph.grid
    shapes: list[tuple[int, tuple[float, float, float], tuple[float, float, float]]] = [
        (SACRUM, (-62.0, -45.0, -80.0), (62.0, 45.0, 50.0)),
        (L5, (-30.0, -45.0, 53.0), (30.0, 70.0, 87.0)),
        (L4, (-30.0, -70.0, 91.0), (30.0, 60.0, 125.0)),
        (ILIUM_LEFT, (25.0, -130.0, -120.0), (170.0, 60.0, 110.0)),
        (ILIUM_RIGHT, (-170.0, -130.0, -120.0), (-25.0, 60.0, 110.0)),
    ]
    for bid, lo, hi in shapes:
        blk = fr.block(g, lo, hi)
        if blk is None:
            continue
        sl, u, v, w = blk
        if bid == SACRUM:
            d = _sd_sacrum(u, v, w)
        elif bid in (L5, L4):
            d = _sd_lumbar(u, v, w, 5 if bid == L5 else 4)
        else:
            d = _sd_ilium(u if bid == ILIUM_LEFT else -u, v, w, fluid_mm)
        free = ph.bone[sl] == 0
        inside = (d <= 0) & free
        tv, bv = ph.tissue[sl], ph.bone[sl]
        tv[inside] = Tissue.CORTEX
        tv[inside & (d <= -_CORTEX_MM[bid])] = Tissue.MARROW
        bv[inside] = bid
        if bid == SACRUM and fusion_lines:
            rem = np.zeros(d.shape, dtype=bool)
            for wk in (13.0, -12.0, -33.0, -49.0):
                vv = v - _c(w)
                rem |= (np.abs(w - wk - 0.06 * vv - 1.2 * np.cos(u / 9.0)) < 0.6) & (
                    ((u / _rub(w)) ** 2 + (vv / _rvb(w)) ** 2) < 0.9)
            tv[rem & (tv == Tissue.MARROW) & (bv == SACRUM)] = Tissue.CORTEX
    # discs L5/S1 and L4/L5: annulus (short T2) and nucleus
    blk = fr.block(g, (-30.0, -50.0, 44.0), (30.0, 30.0, 95.0))
    if blk is not None:
        sl, u, v, w = blk
        vv = v - _c(w)
        for w0, w1 in ((45.0, 56.0), (84.0, 94.0)):
            rho = (u / 24.0) ** 2 + (vv / 16.5) ** 2
            slab = (w > w0) & (w < w1)
            free = ph.bone[sl] == 0
            ph.tissue[sl][slab & (rho <= 1.0) & free] = Tissue.TENDON
            ph.tissue[sl][slab & (rho <= 0.4) & (np.abs(w - (w0 + w1) / 2) < (w1 - w0) / 2 - 1.5) & free] = (
                Tissue.DISC)
    # joint space: cartilage on both surfaces, a fluid line between, interosseous ligament dorsally
    for sgn in (1.0, -1.0):
        lo, hi = (20.0, -45.0, -52.0), (80.0, 50.0, 52.0)
        if sgn < 0:
            lo, hi = (-80.0, -45.0, -52.0), (-20.0, 50.0, 52.0)
        blk = fr.block(g, lo, hi)
        if blk is None:
            continue
        sl, u, v, w = blk
        a = sgn * u
        vv = v - _c(w)
        hw = _half_width(vv, w)
        gap = _gap(vv, fluid_mm)
        d_s = _sd_sacrum(u, v, w)
        d_i = _sd_ilium(a, v, w, fluid_mm)
        space = (a > hw - 0.3) & (a < hw + gap + 0.3) & (d_s > 0) & (d_i > 0) & (d_s < gap + 0.8) & (
            d_i < gap + 0.8) & (w > _JOINT_W[0]) & (w < _JOINT_W[1]) & (ph.bone[sl] == 0)
        mid = np.abs(a - (hw + gap / 2.0))
        lig = vv > 10.0
        tv = ph.tissue[sl]
        tv[space & lig] = Tissue.TENDON
        tv[space & ~lig] = Tissue.CARTILAGE
        tv[space & ~lig & (mid < fluid_mm / 2.0)] = Tissue.FLUID
        ph.landmarks["joint_mid_w_left" if sgn > 0 else "joint_mid_w_right"] = (
            float(np.mean(_JOINT_W)), 0.0, 0.0)


def _paint_canal_and_roots(ph: Phantom, fr: _Frame) -> None:
    """Epidural fat, thecal sac (CSF, ends at S2), cauda equina and sacral roots in the foramina."""
    g = ph.grid
    blk = fr.block(g, (-40.0, -40.0, -75.0), (40.0, 50.0, 130.0))
    if blk is None:
        return
    sl, u, v, w = blk
    vv = v - _c(w)
    cvc, cu, cv = _canal(w)
    lumbar = smoothstep(40.0, 52.0, w)
    cc = cvc * (1 - lumbar) + 26.0 * lumbar
    ru = cu * (1 - lumbar) + 12.0 * lumbar
    rv = cv * (1 - lumbar) + 8.0 * lumbar
    canal = (sd_ellipse_cylinder(u, vv, 0.0, cc, ru, rv) <= 0) & (w > -72.0)
    soft = ph.bone[sl] == 0
    tv = ph.tissue[sl]
    tv[canal & soft] = Tissue.FAT
    sac = (sd_ellipse_cylinder(u, vv, 0.0, cc, 0.75 * ru, 0.85 * rv) <= 0) & (
        w > -8.0 + 4.0 * (np.abs(u) / 10.0) ** 2)
    tv[canal & sac & soft] = Tissue.CSF
    # sacral roots: canal -> lateral mass -> anterior foramen -> sacral plexus
    roots = [(14.0, 30.0, 5.5), (-12.0, 27.0, 4.5), (-33.0, 22.0, 3.5), (-49.0, 17.0, 2.8)]
    blk2 = fr.block(g, (-75.0, -60.0, -110.0), (75.0, 45.0, 30.0))
    if blk2 is None:
        return
    sl2, u2, v2, _ = blk2
    shape2 = np.broadcast_shapes(u2.shape, v2.shape)
    holes, nerves = [], []
    for wk, uk, rk in roots:
        wk_a = np.asarray(wk)
        cvk = float(_canal(wk_a)[0])
        vak = -0.95 * float(_rvb(wk_a)) - 8.0
        for sgn in (1.0, -1.0):
            p0 = (sgn * 7.0, cvk, wk + 5.0)
            p1 = (sgn * uk, 5.0, wk)
            p2 = (sgn * (uk + 3.0), vak, wk - 3.0)
            p3 = (sgn * 42.0, -28.0, -45.0)
            for a_, b_ in ((p0, p1), (p1, p2)):
                holes.append(_capsule(a_, b_, rk))
                nerves.append(_capsule(a_, b_, 0.5 * rk))
            nerves.append(_capsule(p2, p3, 0.6 * rk))
    # sciatic nerve leaving through the greater sciatic notch
    for sgn in (1.0, -1.0):
        nerves.append(_capsule((sgn * 42.0, -28.0, -45.0), (sgn * 68.0, 4.0, -72.0), 5.0))
    d_hole = _min_sd(g, fr, sl2, shape2, holes)
    d_root = _min_sd(g, fr, sl2, shape2, nerves)
    tv2, bv2 = ph.tissue[sl2], ph.bone[sl2]
    hole = (d_hole <= 0) & (bv2 == SACRUM)
    tv2[hole] = Tissue.FAT
    bv2[hole] = 0
    soft2 = bv2 == 0
    tv2[(d_root <= 2.0) & soft2 & (tv2 == Tissue.MUSCLE)] = Tissue.FAT  # perineural fat
    tv2[(d_root <= 0) & soft2] = Tissue.NERVE


def _paint_pelvis(ph: Phantom, fr: _Frame, rng: np.random.Generator, *, vessel: bool) -> None:
    """Pelvic fat, psoas, rectum/sigmoid/small bowel (with gas), iliac vessels."""
    g = ph.grid
    blk = fr.block(g, (-130.0, -170.0, -140.0), (130.0, 10.0, 160.0))
    if blk is None:
        return
    sl, u, v, w = blk
    vv = v - _c(w)
    tv = ph.tissue[sl]
    soft = (ph.bone[sl] == 0) & (tv == Tissue.MUSCLE)
    rvb = np.where(w < 45.0, _rvb(w), 17.0)
    rx = _interp(w, [-140, -60, -20, 20, 60, 160], [40, 46, 50, 58, 66, 72])
    cav = sd_ellipse_cylinder(u, vv, 0.0, -rvb - 3.0 - 62.0, rx, 62.0) <= 0
    tv[cav & soft] = Tissue.FAT
    cavity = cav & (ph.bone[sl] == 0)
    # psoas
    shape = cavity.shape
    psoas = []
    for sgn in (1.0, -1.0):
        pts = [(sgn * 34.0, -22.0, 160.0), (sgn * 42.0, -26.0, 60.0), (sgn * 58.0, -40.0, 5.0),
               (sgn * 72.0, -58.0, -50.0)]
        for a_, b_ in pairwise(pts):
            psoas.append(_capsule(a_, b_, 17.0, (1.0, 1.2, 1.0)))
    d_ps = _min_sd(g, fr, sl, shape, psoas)
    tv[(d_ps <= 0) & cavity] = Tissue.MUSCLE
    # bowel: rectum along the anterior sacrum, sigmoid, a few small-bowel loops
    gut = [_capsule((0.0, -30.0, -130.0), (0.0, -26.0, -35.0), 14.0),
           _capsule((0.0, -26.0, -35.0), (-32.0, -42.0, 5.0), 13.0),
           _capsule((-32.0, -42.0, 5.0), (-12.0, -55.0, 32.0), 12.0)]
    loops = []
    for _ in range(int(rng.integers(4, 7))):
        c = (float(rng.uniform(-45, 45)), float(rng.uniform(-85, -48)), float(rng.uniform(15, 120)))
        r = (float(rng.uniform(10, 16)), float(rng.uniform(9, 14)), float(rng.uniform(12, 22)))
        loops.append({"center_uvw_mm": [round(v_, 1) for v_ in c], "radii_mm": [round(v_, 1) for v_ in r]})
        gut.append(((lambda u_, vv_, w_, c=c, r=r: sd_ellipsoid(u_, vv_, w_, c, r)),
                    np.asarray(c) - np.asarray(r) - 1, np.asarray(c) + np.asarray(r) + 1))
    d_b = _min_sd(g, fr, sl, shape, gut)
    bowel = (d_b <= 0) & cavity & (d_ps > 0)
    wall = bowel & (d_b > -2.0)
    lo_i = np.array([s.start for s in sl])
    idx = np.nonzero(bowel & ~wall)
    lumen = g.geometry.index_to_lps(np.stack(idx, axis=1) + lo_i)
    tex = smooth_noise(lumen, rng, wavelength_mm=9.0)
    anterior = smooth_noise(lumen, rng, wavelength_mm=30.0)
    gas = (tex > 1.1) | ((anterior > 0.9) & (tex > 0.2))
    tv[wall] = Tissue.MUSCLE
    tv[idx] = np.where(gas, Tissue.GAS, Tissue.BOWEL).astype(np.uint8)
    ph.mimics.append({"kind": "bowel", "outside_bone": True, "n_small_bowel_loops": len(loops),
                      "gas_fraction": round(float(np.mean(gas)) if gas.size else 0.0, 3)})
    if not vessel:
        return
    arts, vens = [], []
    for sgn in (1.0, -1.0):
        art = [(sgn * 10.0, -36.0, 150.0), (sgn * 30.0, -36.0, 55.0), (sgn * 42.0, -31.0, 10.0),
               (sgn * 46.0, -27.0, -30.0), (sgn * 63.0, 4.0, -50.0)]
        ven = [(sgn * 6.0, -29.0, 150.0), (sgn * 25.0, -29.0, 55.0), (sgn * 37.0, -25.0, 10.0),
               (sgn * 41.0, -22.0, -30.0), (sgn * 58.0, 8.0, -54.0)]
        for a_, b_ in pairwise(art):
            arts.append(_capsule(a_, b_, 3.5))
        for a_, b_ in pairwise(ven):
            vens.append(_capsule(a_, b_, 4.5))
    d_a = _min_sd(g, fr, sl, shape, arts)
    d_v = _min_sd(g, fr, sl, shape, vens)
    soft = (ph.bone[sl] == 0) & np.isin(tv, (Tissue.MUSCLE, Tissue.FAT, Tissue.BOWEL, Tissue.GAS))
    tv[(d_v <= 0) & soft] = Tissue.VEIN
    tv[(d_a <= 0) & soft] = Tissue.ARTERY
    ph.mimics.append({"kind": "iliac_vessels", "outside_bone": True, "bright_on_stir": "veins"})


def _marrow_fat(ph: Phantom, fr: _Frame, rng: np.random.Generator, *, red_marrow: bool) -> None:
    """Mixed adult axial marrow: fat fraction ~0.2-0.35 with smooth texture (with the mixed-marrow water,
    ~0.4 of the muscle-to-fat range on T1 and ~1.2x muscle on STIR, as on real SIJ scans); optional red
    islands (fat fraction 0.08: T1 a little darker, STIR a little brighter than the marrow around)."""
    m = ph.tissue == Tissue.MARROW
    idx = np.nonzero(m)
    pts = ph.grid.geometry.index_to_lps(np.stack(idx, axis=1))
    bone = ph.bone[idx]
    base = np.zeros(len(bone), dtype=F32)
    for bid in ph.bone_names:
        base[bone == bid] = 0.27 + float(rng.uniform(-0.03, 0.03))
    ff = base + 0.04 * smooth_noise(pts, rng, wavelength_mm=22.0) + 0.02 * smooth_noise(pts, rng, wavelength_mm=7.0)
    if red_marrow:
        for bid in (SACRUM, ILIUM_LEFT, ILIUM_RIGHT):
            sel = np.nonzero(bone == bid)[0]
            if len(sel) == 0:
                continue
            for _ in range(int(rng.integers(2, 4))):
                c = pts[sel[rng.integers(len(sel))]]
                r = float(rng.uniform(4.0, 8.0))
                d = np.linalg.norm(pts - c, axis=1)
                wgt = sigmoid((r - d) / 1.2) * (bone == bid)
                ff = ff * (1 - wgt) + 0.08 * wgt
                ph.mimics.append({"kind": "red_marrow", "bone": ph.bone_names[bid],
                                  "center_lps_mm": [round(float(v), 2) for v in c], "radius_mm": round(r, 2)})
    ph.fat_fraction[idx] = np.clip(ff, 0.05, 0.6)


# --------------------------------------------------------------------- lesions


def sij_joint_mask(ph: Phantom, side: str) -> NDArray[np.bool_]:
    """Synovial joint space (cartilage + fluid) of one side (``'LEFT'`` = LPS x > 0), full grid."""
    x = ph.grid.axis(0)[:, None, None]
    sel = (x > 0) if side == "LEFT" else (x < 0)
    return np.isin(ph.tissue, (Tissue.CARTILAGE, Tissue.FLUID)) & sel


def sij_lesion_site(ph: Phantom, bone: str, location: str, rng: np.random.Generator
                    ) -> tuple[int, str, NDArray[np.float64], NDArray[np.bool_]]:
    """Pick a subchondral point in one SPARCC quadrant.

    Parameters
    ----------
    ph : Phantom
        Built by :func:`build_sij`.
    bone : str
        ``'auto'``, ``'sacrum'``, ``'ilium_left'`` or ``'ilium_right'`` (must agree with ``location``).
    location : str
        One of :data:`SIJ_LOCATIONS` (e.g. ``'LEFT_ILIAC_UPPER'``) or ``'random'``.
    rng : numpy.random.Generator

    Returns
    -------
    bone_id : int
    location : str
    site_lps_mm : ndarray, shape (3,)
    joint : ndarray of bool, shape ``ph.grid.shape``
        That side's synovial joint space (for depth measurements).
    """
    names = {"sacrum": SACRUM, "ilium_left": ILIUM_LEFT, "ilium_right": ILIUM_RIGHT}
    if bone not in ("auto", *names):
        raise ValueError(f"'bone' must be one of {{'auto', 'sacrum', 'ilium_left', 'ilium_right'}}; got {bone!r}")
    allowed = [loc for loc in SIJ_LOCATIONS if bone == "auto" or _loc_bone(loc) == bone]
    if location == "random":
        location = str(allowed[int(rng.integers(len(allowed)))])
    if location not in SIJ_LOCATIONS:
        raise ValueError(f"'location' must be one of {{'random', {', '.join(map(repr, SIJ_LOCATIONS))}}}; "
                         f"got {location!r}")
    if location not in allowed:
        raise ValueError(f"location {location!r} is not on bone {bone!r}")
    side, _part, half = location.split("_")
    bid = names[_loc_bone(location)]
    joint = sij_joint_mask(ph, side)
    tilt = ph.landmarks.get("tilt_deg", (SIJ_TILT_DEG, 0.0, 0.0))[0]
    fr = _Frame(tilt)
    jw = fr.from_lps(ph.grid.geometry.index_to_lps(np.argwhere(joint)))[:, 2] if joint.any() else np.zeros(1)
    w_mid = float(0.5 * (jw.min() + jw.max()))
    upper = half == "UPPER"

    def where(p: NDArray[np.float64]) -> NDArray[np.bool_]:
        w = fr.from_lps(p)[:, 2]
        return (w > w_mid + 4.0) if upper else (w < w_mid - 4.0)

    sites = ph.subchondral_sites(bid, articular=joint, where=where)
    if len(sites) == 0:
        raise ValueError(f"no subchondral plate found for {location} on this grid")
    prev = [np.asarray(les.center_lps_mm) for les in ph.lesions]
    cand = sites[rng.integers(len(sites), size=12)]
    if prev:
        dmin = np.min([np.linalg.norm(cand - p, axis=1) for p in prev], axis=0)
        site = cand[int(np.argmax(dmin))]
    else:
        site = cand[0]
    return bid, location, site, joint


def _loc_bone(location: str) -> str:
    side, part, _half = location.split("_")
    return "sacrum" if part == "SACRAL" else f"ilium_{side.lower()}"


def joint_depth_mm(joint: NDArray[np.bool_], inside: NDArray[np.bool_], sl: tuple[slice, ...],
                   res_mm: float) -> float:
    """Largest distance (mm) from ``joint`` of the voxels of ``inside`` (a mask on block ``sl``)."""
    jb = joint[sl]
    if not jb.any() or not inside.any():
        return float("nan")
    dist = ndi.distance_transform_edt(~jb, sampling=res_mm)
    return float(np.max(dist[inside]))
