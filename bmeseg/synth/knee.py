"""A right knee built from smooth implicit shapes (LPS mm, joint line near z = 0).

Patient coordinates: +x = patient left = *medial* for this right knee, +y =
posterior, +z = superior. The distal femoral condyles touch ``z = 0``; the
tibial plateau is at ``z = -5``; the patella sits in front of the trochlea
around ``z = +33``. Sizes are those of an average adult knee.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray

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
from .tissues import Tissue

__all__ = ["KNEE_EXTENT_LPS_MM", "KNEE_LOCATIONS", "build_knee", "knee_lesion_site"]

log = logging.getLogger(__name__)

#: box (lo, hi) outside of which the knee model holds only air, LPS mm
KNEE_EXTENT_LPS_MM = ((-62.0, -68.0, -160.0), (62.0, 76.0, 160.0))
#: default field-of-view centre
KNEE_CENTER_LPS_MM = (-3.0, 3.0, 6.0)

FEMUR, TIBIA, PATELLA, FIBULA = 1, 2, 3, 4

#: named lesion locations per bone
KNEE_LOCATIONS: dict[str, tuple[str, ...]] = {
    "femur": ("medial_condyle", "lateral_condyle", "trochlea"),
    "tibia": ("medial_plateau", "lateral_plateau"),
    "patella": ("patella",),
    "fibula": ("fibular_head",),
}
_BONE_IDS = {"femur": FEMUR, "tibia": TIBIA, "patella": PATELLA, "fibula": FIBULA}


def _interp_z(z: NDArray[np.float32], zs: list[float], vals: list[float]) -> NDArray[np.float32]:
    return np.interp(z, zs, vals).astype(F32)


# ------------------------------------------------------------------ bones (SDF)


def _sd_femur(x: Any, y: Any, z: Any) -> NDArray[np.float32]:
    zs = [20.0, 32.0, 50.0, 85.0]
    rx = _interp_z(z, zs, [34.0, 31.0, 20.0, 14.5])
    ry = _interp_z(z, zs, [25.0, 23.0, 17.0, 14.0])
    cy = _interp_z(z, zs, [1.0, 0.0, 1.0, 2.0])
    shaft = smax(sd_ellipse_cylinder(x, y, 0.0, cy, rx, ry), 20.0 - z, 4.0)
    med = sd_ellipsoid(x, y, z, (20.0, 4.0, 22.0), (15.0, 29.0, 22.0))
    lat = sd_ellipsoid(x, y, z, (-20.0, 4.0, 23.0), (16.0, 28.0, 23.0))
    troch = sd_ellipsoid(x, y, z, (0.0, -8.0, 31.0), (33.0, 20.0, 17.0))
    d = smin(smin(med, lat, 5.0), troch, 6.0)
    d = smin(d, shaft, 8.0)
    d = smax(d, -_sd_notch(x, y, z), 2.5)
    groove = sd_ellipse_cylinder(x, y, 0.0, -31.0, 9.0, 6.0)
    groove = smax(groove, z - 48.0, 2.0)
    return smax(d, -groove, 3.0)


def _sd_notch(x: Any, y: Any, z: Any) -> NDArray[np.float32]:
    """Intercondylar notch: an arch (elliptic in the coronal plane) open posteriorly and distally."""
    arch = sd_ellipse_cylinder(x, z, 0.0, 4.0, 9.5, 20.0)
    return smax(arch, -2.0 - y, 2.0)


def _sd_tibia(x: Any, y: Any, z: Any) -> NDArray[np.float32]:
    zs = [-70.0, -45.0, -18.0, -8.0]
    rx = _interp_z(z, zs, [15.5, 20.0, 35.0, 37.0])
    ry = _interp_z(z, zs, [14.0, 17.0, 24.0, 25.0])
    cy = _interp_z(z, zs, [0.0, 1.0, 3.0, 3.0])
    body = sd_ellipse_cylinder(x, y, 0.0, cy, rx, ry)
    top = z - (-5.0 - 0.1 * (y - 3.0))  # ~6 degrees posterior slope
    d = smax(body, top, 2.0)
    spines = np.minimum(sd_ellipsoid(x, y, z, (5.0, 4.0, -4.5), (3.5, 7.0, 4.0)),
                        sd_ellipsoid(x, y, z, (-5.0, 4.0, -4.5), (3.5, 7.0, 4.0)))
    d = smin(d, spines, 2.0)
    tub = sd_ellipsoid(x, y, z, (1.0, -19.0, -31.0), (10.0, 8.0, 13.0))
    return smin(d, tub, 4.0)


def _sd_patella(x: Any, y: Any, z: Any) -> NDArray[np.float32]:
    body = sd_ellipsoid(x, y, z, (0.0, -43.0, 33.0), (21.0, 10.0, 18.0))
    ridge = sd_ellipsoid(x, y, z, (0.0, -36.0, 33.0), (7.0, 6.0, 13.0))
    return smin(body, ridge, 3.0)


def _sd_fibula(x: Any, y: Any, z: Any) -> NDArray[np.float32]:
    head = sd_ellipsoid(x, y, z, (-33.0, 23.0, -23.0), (9.0, 9.0, 10.0))
    shaft = smax(sd_ellipse_cylinder(x, y, -34.0, 24.0, 6.5, 6.5), z - (-24.0), 2.0)
    return smin(head, shaft, 5.0)


_BONES = (
    # id, sdf, bbox lo, bbox hi, cortex thickness mm
    (FEMUR, _sd_femur, (-48.0, -40.0, -4.0), (48.0, 40.0, 400.0), 1.8),
    (TIBIA, _sd_tibia, (-42.0, -32.0, -400.0), (42.0, 32.0, 0.0), 1.6),
    (PATELLA, _sd_patella, (-24.0, -56.0, 12.0), (24.0, -27.0, 54.0), 1.5),
    (FIBULA, _sd_fibula, (-45.0, 12.0, -400.0), (-22.0, 36.0, -10.0), 1.5),
)


# --------------------------------------------------------------------- builder


def build_knee(
    grid: FineGrid,
    *,
    rng: np.random.Generator,
    effusion: float = 0.3,
    red_marrow: bool = False,
    vessel: bool = True,
    cyst: bool = False,
    physeal_scar: bool = True,
) -> Phantom:
    """Paint a right knee into a new :class:`~bmeseg.synth.phantom.Phantom` on ``grid``.

    Parameters
    ----------
    grid : FineGrid
        Fine grid (LPS mm); whatever part of :data:`KNEE_EXTENT_LPS_MM` it covers is built.
    rng : numpy.random.Generator
        Marrow texture and mimic placement.
    effusion : float
        0 (dry joint) to 1 (large effusion): thickness of the suprapatellar recess
        and posterior recess fluid.
    red_marrow : bool
        Add haematopoietic marrow islands (low fat fraction, no edema) in the metaphyses.
    vessel : bool
        Add the popliteal artery (flow void) and vein (bright on STIR).
    cyst : bool
        Add a small subchondral cyst in the lateral tibial plateau and a Baker cyst.
    physeal_scar : bool
        Thin sclerotic lines at the former growth plates.

    Returns
    -------
    Phantom
        Without lesions (see :func:`knee_lesion_site` and ``Phantom.insert_lesion``).
    """
    ph = Phantom.empty(grid)
    ph.landmarks["center"] = KNEE_CENTER_LPS_MM
    t = ph.tissue

    # body outline, skin, subcutaneous fat
    sl, x, y, z = grid.full()
    zs = [-120.0, -40.0, 0.0, 40.0, 120.0]
    rx = _interp_z(z, zs, [46.0, 50.0, 54.0, 57.0, 62.0])
    ry = _interp_z(z, zs, [50.0, 58.0, 66.0, 62.0, 62.0])
    cy = _interp_z(z, zs, [10.0, 8.0, 3.0, 4.0, 6.0])
    d_body = sd_ellipse_cylinder(x, y, 0.0, cy, rx, ry)
    t[d_body <= 0] = Tissue.SKIN
    t[d_body <= -1.5] = Tissue.FAT
    deep = d_body <= -8.5
    del d_body

    # muscles: thigh above the knee (later anteriorly), leg below
    # wavy boundaries so that no muscle edge is a straight line
    z_thigh = 52.0 + 28.0 * smoothstep(-8.0, -30.0, y) + 6.0 * np.cos(x / 17.0) + 4.0 * np.sin(y / 13.0)
    t[deep & (z > z_thigh)] = Tissue.MUSCLE
    z_leg = -50.0 - 8.0 * np.cos(x / 15.0) + 10.0 * smoothstep(20.0, 40.0, y) - 5.0 * np.sin(y / 11.0)
    t[deep & (z < z_leg)] = Tissue.MUSCLE
    for c, r in (((20.0, 42.0, -35.0), (19.0, 20.0, 62.0)),  # medial gastrocnemius head
                 ((-20.0, 40.0, -30.0), (16.0, 17.0, 56.0)),  # lateral gastrocnemius head
                 ((0.0, 30.0, -30.0), (26.0, 7.0, 12.0)),  # popliteus
                 ((40.0, -4.0, 72.0), (20.0, 26.0, 38.0))):  # vastus medialis
        _paint(ph, c, r, Tissue.MUSCLE, where=deep, shape="ellipsoid")
    # popliteal fossa fat
    blk = grid.block((-16, 22, -25), (16, 62, 90))
    if blk is not None:
        sl, x, y, z = blk
        d = smax(sd_ellipse_cylinder(x, y, 0.0, 42.0, 11.0, 17.0), np.abs(z - 32.0) - 55.0, 4.0)
        t[sl][(d <= 0) & deep[sl]] = Tissue.FAT
    _paint(ph, (0.0, -36.0, -4.0), (24.0, 12.0, 14.0), Tissue.FAT_PAD, shape="ellipsoid")  # Hoffa

    # effusion: suprapatellar pouch and posterior recesses
    th = 2.0 + 10.0 * float(np.clip(effusion, 0.0, 1.0))
    if effusion > 0:
        _paint(ph, (0.0, -22.0 - th / 2, 52.0), (27.0, th / 2, 19.0 + 4 * effusion), Tissue.FLUID,
               shape="ellipsoid")
        for cx in (20.0, -20.0):
            _paint(ph, (cx, 34.5 + th / 4, 20.0), (10.0, th / 4, 9.0), Tissue.FLUID, shape="ellipsoid")
    if vessel:
        _paint_vessels(ph)
    if cyst:
        _paint(ph, (22.0, 54.0, 4.0), (8.0, 9.0, 17.0), Tissue.CYST, shape="ellipsoid")
        ph.mimics.append({"kind": "baker_cyst", "center_lps_mm": [22.0, 54.0, 4.0], "outside_bone": True})

    # bones: cortex shell + marrow
    sdf: dict[int, tuple[tuple[slice, ...], NDArray[np.float32]]] = {}
    for bid, fn, lo, hi, cortex in _BONES:
        blk = grid.block(lo, hi)
        if blk is None:
            continue
        sl, x, y, z = blk
        d = fn(x, y, z)
        inside = d <= 0
        if bid == FIBULA and FEMUR != bid:
            inside &= ph.bone[sl] == 0
        tv, bv = t[sl], ph.bone[sl]
        tv[inside] = Tissue.CORTEX
        tv[inside & (d <= -cortex)] = Tissue.MARROW
        bv[inside] = bid
        sdf[bid] = (sl, d)

    _paint_cartilage_and_joint(ph, sdf, effusion=effusion)
    _paint_tendons(ph)
    if physeal_scar:
        _paint_scars(ph)
    _marrow_fat(ph, rng, red_marrow=red_marrow)
    if cyst:
        _paint_subchondral_cyst(ph, rng)
    return ph


def _paint(ph: Phantom, c: tuple[float, float, float], r: tuple[float, float, float], label: Tissue, *,
           shape: str, where: NDArray[np.bool_] | None = None, keep_bone: bool = True) -> None:
    c_a, r_a = np.asarray(c), np.asarray(r)
    blk = ph.grid.block(c_a - r_a - 1, c_a + r_a + 1)
    if blk is None:
        return
    sl, x, y, z = blk
    d = sd_ellipsoid(x, y, z, c, r)
    m = d <= 0
    if where is not None:
        m &= where[sl]
    if keep_bone:
        m &= ph.bone[sl] == 0
    ph.tissue[sl][m] = label


def _paint_vessels(ph: Phantom) -> None:
    blk = ph.grid.block((-14, 30, -200), (14, 56, 200))
    if blk is None:
        return
    sl, x, y, z = blk
    art = np.hypot(x - (2.0 + 0.03 * z), y - (40.0 + 0.01 * z)) - 3.0
    vein = np.hypot(x - (-4.5 + 0.02 * z), y - (44.0 + 0.01 * z)) - 4.0
    tv = ph.tissue[sl]
    soft = ph.bone[sl] == 0
    tv[(art <= 0) & soft] = Tissue.ARTERY
    tv[(vein <= 0) & soft] = Tissue.VEIN


def _paint_cartilage_and_joint(ph: Phantom, sdf: dict[int, tuple[tuple[slice, ...], NDArray[np.float32]]], *,
                               effusion: float) -> None:
    g = ph.grid
    blk = g.block((-46, -58, -14), (46, 42, 56))
    if blk is None:
        return
    sl, x, y, z = blk
    t = ph.tissue[sl]
    soft = ph.bone[sl] == 0

    def local(bid: int) -> NDArray[np.float32]:
        """SDF of a bone on this block (large where not computed)."""
        out = np.full(t.shape, 99.0, dtype=F32)
        if bid not in sdf:
            return out
        bsl, d = sdf[bid]
        # intersection of the two slice boxes
        src, dst = [], []
        for a, b in zip(bsl, sl, strict=True):
            lo, hi = max(a.start, b.start), min(a.stop, b.stop)
            if hi <= lo:
                return out
            src.append(slice(lo - a.start, hi - a.start))
            dst.append(slice(lo - b.start, hi - b.start))
        out[tuple(dst)] = d[tuple(src)]
        return out

    d_f, d_t, d_p = local(FEMUR), local(TIBIA), local(PATELLA)
    notch = _sd_notch(x, y, z)
    fem_c = (d_f > 0) & (d_f <= 2.3) & (notch > 1.0) & (z < 40.0) & (np.abs(x) < 33.0) & soft
    tib_c = ((d_t > 0) & (d_t <= 2.0) & (z > -9.0) & (np.abs(x) > 6.0)
             & ((x / 34.0) ** 2 + ((y - 3.0) / 23.0) ** 2 < 1.0) & soft)
    pat_c = (d_p > 0) & (d_p <= 3.0) & (y > -40.0) & (np.abs(x) < 19.0) & soft
    t[fem_c | tib_c | pat_c] = Tissue.CARTILAGE

    # menisci: wedge-shaped rings on each plateau
    free = soft & (t != Tissue.CARTILAGE)
    for cx, rx, ry in ((20.0, 16.0, 22.0), (-19.0, 15.0, 19.0)):
        rho = np.sqrt(((x - cx) / rx) ** 2 + ((y - 2.0) / ry) ** 2)
        h = 7.0 * np.clip((rho - 0.55) / 0.45, 0.0, 1.0)
        men = (rho < 1.05) & (rho > 0.55) & (z > -5.5) & (z < -5.0 + h) & (d_f > 2.3) & free
        t[men] = Tissue.TENDON
    # joint fluid film in the tibiofemoral and patellofemoral gaps
    free = soft & (t != Tissue.CARTILAGE) & (t != Tissue.TENDON)
    film = ((d_f < 5.5) & (d_t < 5.5)) | ((d_p < 4.5) & (d_f < 7.0))
    if effusion > 0:
        film |= (d_f < 3.0 + 2.0 * effusion) & (d_f > 0) & (z < 40.0) & (y > 28.0)  # posterior capsule
    t[film & free] = Tissue.FLUID


def _paint_tendons(ph: Phantom) -> None:
    specs = (
        # a, b, radius, squash: patellar tendon, quadriceps tendon, ACL, PCL, MCL, LCL
        ((0.0, -50.0, 16.0), (1.0, -29.0, -28.0), 2.6, (5.0, 1.0, 1.0)),
        ((0.0, -49.0, 48.0), (0.0, -34.0, 95.0), 3.0, (5.0, 1.0, 1.0)),
        ((-9.0, 20.0, 17.0), (-3.0, -6.0, -5.0), 4.5, (1.0, 1.0, 1.0)),
        ((8.0, 8.0, 16.0), (1.0, 28.0, -9.0), 5.0, (1.0, 1.0, 1.0)),
        ((44.0, 3.0, 32.0), (41.0, 0.0, -40.0), 1.6, (1.0, 5.0, 1.0)),
        ((-42.0, 10.0, 30.0), (-37.0, 21.0, -20.0), 2.5, (1.0, 1.0, 1.0)),
    )
    for a, b, r, s in specs:
        ext = r * max(s) + 1
        lo = np.minimum(a, b) - ext
        hi = np.maximum(a, b) + ext
        blk = ph.grid.block(lo, hi)
        if blk is None:
            continue
        sl, x, y, z = blk
        d = sd_capsule(x, y, z, a, b, r, squash=s)
        m = (d <= 0) & (ph.bone[sl] == 0) & (ph.tissue[sl] != Tissue.CARTILAGE)
        ph.tissue[sl][m] = Tissue.TENDON


def _paint_scars(ph: Phantom) -> None:
    for bid, z0, amp, lo, hi in ((FEMUR, 40.0, 4.0, (-45, -35, 25), (45, 35, 55)),
                                 (TIBIA, -22.0, 2.5, (-42, -30, -32), (42, 30, -12))):
        blk = ph.grid.block(lo, hi)
        if blk is None:
            continue
        sl, x, y, z = blk
        zs = z0 + amp * np.cos(x / 11.0) - 0.08 * y
        band = (np.abs(z - zs) < 0.6) & ph.marrow_of(bid, sl)
        ph.tissue[sl][band] = Tissue.CORTEX


def _marrow_fat(ph: Phantom, rng: np.random.Generator, *, red_marrow: bool) -> None:
    m = ph.tissue == Tissue.MARROW
    idx = np.nonzero(m)
    pts = ph.grid.geometry.index_to_lps(np.stack(idx, axis=1))
    bone = ph.bone[idx]
    zz = pts[:, 2]
    meta = np.where(bone == FEMUR, smoothstep(25.0, 75.0, zz),
                    np.where(bone == TIBIA, smoothstep(-15.0, -65.0, zz), 0.0))
    ff = 0.9 - 0.1 * meta + 0.02 * smooth_noise(pts, rng, wavelength_mm=12.0)
    if red_marrow:
        for bid, c_lo, c_hi in ((FEMUR, (-20, -8, 42), (20, 8, 70)), (TIBIA, (-14, -8, -60), (14, 8, -30))):
            for _ in range(int(rng.integers(2, 4))):
                c = rng.uniform(c_lo, c_hi)
                r = rng.uniform(4.0, 8.0)
                d = np.linalg.norm(pts - c, axis=1)
                w = sigmoid((r - d) / 1.2) * (bone == bid)
                ff = ff * (1 - w) + 0.4 * w
                ph.mimics.append({"kind": "red_marrow", "bone": ph.bone_names[bid],
                                  "center_lps_mm": [round(float(v), 2) for v in c], "radius_mm": round(r, 2)})
    ph.fat_fraction[idx] = np.clip(ff, 0.3, 0.97)


def _paint_subchondral_cyst(ph: Phantom, rng: np.random.Generator) -> None:
    sites = ph.subchondral_sites(TIBIA, where=lambda p: (p[:, 0] < -10) & (p[:, 0] > -28))
    if len(sites) == 0:
        return
    s = sites[rng.integers(len(sites))]
    c = s + np.array([0.0, 0.0, -4.0])
    r = 3.0
    blk = ph.grid.block(c - r - 1, c + r + 1)
    if blk is None:
        return
    sl, x, y, z = blk
    d = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) - r
    ph.tissue[sl][(d <= 0) & ph.marrow_of(TIBIA, sl)] = Tissue.CYST
    ph.mimics.append({"kind": "subchondral_cyst", "bone": "tibia",
                      "center_lps_mm": [round(float(v), 2) for v in c], "radius_mm": r})


# --------------------------------------------------------------------- lesions


def knee_lesion_site(ph: Phantom, bone: str, location: str, rng: np.random.Generator) -> tuple[int, str, NDArray[np.float64]]:
    """Pick a subchondral point for a lesion.

    Parameters
    ----------
    bone : str
        ``'femur'``, ``'tibia'``, ``'patella'`` or ``'fibula'``.
    location : str
        One of :data:`KNEE_LOCATIONS` for that bone, or ``'random'``.

    Returns
    -------
    bone_id, location, site_lps_mm
    """
    if bone not in _BONE_IDS:
        raise ValueError(f"'bone' must be one of {set(_BONE_IDS)}; got {bone!r}")
    locs = KNEE_LOCATIONS[bone]
    if location == "random":
        location = str(locs[rng.integers(len(locs))])
    if location not in locs:
        raise ValueError(f"'location' must be one of {{'random', {', '.join(map(repr, locs))}}}; got {location!r}")
    bid = _BONE_IDS[bone]
    filters = {
        "medial_condyle": lambda p: (p[:, 0] > 10) & (p[:, 2] < 14),
        "lateral_condyle": lambda p: (p[:, 0] < -10) & (p[:, 2] < 14),
        "trochlea": lambda p: (p[:, 1] < -14) & (p[:, 2] > 20),
        "medial_plateau": lambda p: (p[:, 0] > 9) & (p[:, 0] < 30),
        "lateral_plateau": lambda p: (p[:, 0] < -9) & (p[:, 0] > -30),
        "patella": lambda p: np.abs(p[:, 0]) < 14,
        "fibular_head": lambda p: p[:, 2] > -20,
    }
    if bone == "fibula":
        # no articular cartilage is modelled there: use the head's cortex facing the tibia
        art = (ph.bone == TIBIA)
        from scipy import ndimage as ndi
        art = ndi.binary_dilation(art, iterations=max(1, round(4.0 / ph.grid.res_mm))) & (ph.bone != TIBIA)
        sites = ph.subchondral_sites(bid, articular=art, where=filters[location])
    else:
        sites = ph.subchondral_sites(bid, where=filters[location])
    if len(sites) == 0:
        raise ValueError(f"no subchondral plate found for {bone} {location} on this grid")
    prev = [np.asarray(les.center_lps_mm) for les in ph.lesions if les.bone == bone]
    cand = sites[rng.integers(len(sites), size=12)]
    if prev:
        dmin = np.min([np.linalg.norm(cand - p, axis=1) for p in prev], axis=0)
        site = cand[int(np.argmax(dmin))]
    else:
        site = cand[0]
    return bid, location, site
