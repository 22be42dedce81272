"""Bones, their joint-facing surfaces and the scoring subregions of each anatomy preset.

Everything here works in patient coordinates (DICOM LPS: +x patient left, +y
posterior, +z superior, millimetres) through :class:`~bmeseg.volume.Geometry`,
never in array axes, so the same rules hold for sagittal, coronal, axial and
oblique acquisitions and for flipped axes.

Bone naming (:func:`name_bones`)
    *knee*: femur, tibia, patella, fibula; *sij*: sacrum, ilium_left, ilium_right;
    *hip*: femur, acetabulum; *ankle*: tibia, fibula, talus, calcaneus (other
    tarsals ``tarsal_<n>``); *spine*: ``vertebra_<n>`` numbered from the most
    superior body in the field of view (the level is not known from geometry);
    *generic*: ``bone_<n>`` by size. A user label map (``--bone-mask``) keeps its
    own names (:func:`label_names_for_mask`, TotalSegmentator MR names mapped by
    :func:`canonical_bone_name`).

Articular surface (:func:`articular_depth_mm`)
    The part of a bone's marrow boundary that lies within ``joint_gap_mm`` of
    the marrow of another bone (the joint-facing subchondral plate). Depth of a
    marrow voxel = Euclidean distance (mm, true anisotropic spacing) to that
    surface. A bone with no neighbour in the field of view falls back to its
    whole marrow boundary (away from the image edge).

Subregions (:func:`subregions`)
    *knee* (MOAKS, 15 subregions): patella medial/lateral; femur
    medial/lateral x trochlear/central/posterior; tibia medial/lateral x
    anterior/central/posterior plus subspinous. Lateral is the fibula's side of
    the tibia, else the imaged side given by ``laterality``; without either,
    sides are named by patient ``left``/``right``. Only the epiphyseal marrow
    within ``region_depth_mm`` of the articular surface is divided; deeper
    marrow is ``shaft``.
    *sij* (SPARCC / Berlin quadrants): ilium_left/right ``upper``/``lower``;
    sacrum ``left_upper``, ``left_lower``, ``right_upper``, ``right_lower``. Upper
    and lower are split at the craniocaudal middle of each joint's articular
    surface; marrow deeper than ``region_depth_mm`` is ``remote``.
    *others*: one region per bone (``whole``).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from ._morph import bbox_slices, edt
from .errors import InputError
from .volume import Geometry

__all__ = [
    "BONE_CODES",
    "TOTALSEGMENTATOR_MR",
    "Region",
    "Subregions",
    "articular_depth_mm",
    "bone_centroids_lps",
    "canonical_bone_name",
    "label_names_for_mask",
    "lateral_sign",
    "name_bones",
    "names_for_bone_mask_file",
    "read_label_names",
    "subregions",
]

log = logging.getLogger(__name__)

#: SNOMED CT codes (value, meaning) of the bones bmeseg names, as listed in
#: pydicom's ``pydicom.sr.codedict.codes.SCT`` (checked by the tests).
BONE_CODES: dict[str, tuple[str, str]] = {
    "femur": ("71341001", "Femur"),
    "tibia": ("12611008", "Tibia"),
    "fibula": ("87342007", "Fibula"),
    "patella": ("64234005", "Patella"),
    "sacrum": ("54735007", "Sacrum"),
    "ilium": ("22356005", "Ilium"),
    "acetabulum": ("37783008", "Acetabulum"),
    "talus": ("67453005", "Talus"),
    "calcaneus": ("80144004", "Calcaneus"),
    "navicular": ("75772009", "Bone structure of navicular"),
    "vertebra": ("51282000", "Vertebra"),
    "humerus": ("85050009", "Humerus"),
    "bone": ("272673000", "Bone"),
}

#: TotalSegmentator (v2) MR tasks: label value -> class name, bones only
#: (``totalsegmentator/map_to_binary.py``: ``total_mr``, ``appendicular_bones_mr``,
#: ``vertebrae_mr``). ``total_mr`` is the default for a ``--bone-mask`` without names.
TOTALSEGMENTATOR_MR: dict[str, dict[int, str]] = {
    "total_mr": {
        18: "sacrum", 19: "vertebrae", 30: "humerus_left", 31: "humerus_right",
        32: "scapula_left", 33: "scapula_right", 34: "clavicula_left", 35: "clavicula_right",
        36: "femur_left", 37: "femur_right", 38: "hip_left", 39: "hip_right",
    },
    "appendicular_bones_mr": {
        1: "patella", 2: "tibia", 3: "fibula", 4: "tarsal", 5: "metatarsal", 6: "phalanges_feet",
        7: "ulna", 8: "radius",
    },
    "vertebrae_mr": {
        1: "sacrum", 2: "vertebrae_L5", 3: "vertebrae_L4", 4: "vertebrae_L3", 5: "vertebrae_L2",
        6: "vertebrae_L1", 7: "vertebrae_T12", 8: "vertebrae_T11", 9: "vertebrae_T10", 10: "vertebrae_T9",
        11: "vertebrae_T8", 12: "vertebrae_T7", 13: "vertebrae_T6", 14: "vertebrae_T5", 15: "vertebrae_T4",
        16: "vertebrae_T3", 17: "vertebrae_T2", 18: "vertebrae_T1", 19: "vertebrae_C7", 20: "vertebrae_C6",
        21: "vertebrae_C5", 22: "vertebrae_C4", 23: "vertebrae_C3", 24: "vertebrae_C2", 25: "vertebrae_C1",
    },
}


# ------------------------------------------------------------------ label maps


def read_label_names(path: str | Path) -> dict[int, str]:
    """Label value -> name from a JSON object (``{"1": "femur"}``) or a CSV (``label,name`` rows).

    A CSV may have a header row; a JSON may also be a list of ``{"label": 1, "name": "femur"}``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{p}: cannot read bone label names ({exc})") from exc
    out: dict[int, str] = {}
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
            items = data.items() if isinstance(data, dict) else ((d["label"], d["name"]) for d in data)
            out = {int(k): str(v) for k, v in items}
        else:
            for row in csv.reader(text.splitlines()):
                if len(row) < 2 or not row[0].strip().lstrip("-").isdigit():
                    continue  # header or blank
                out[int(row[0])] = row[1].strip()
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{p}: bone label names must map integer labels to names ({exc})") from exc
    if not out:
        raise InputError(f"{p}: no 'label,name' entries found")
    return out


def canonical_bone_name(name: str, anatomy: str) -> str:
    """Map a label-map class name (e.g. TotalSegmentator's) to bmeseg's bone name for ``anatomy``.

    >>> canonical_bone_name("hip_left", "sij"), canonical_bone_name("femur_right", "knee")
    ('ilium_left', 'femur')
    >>> canonical_bone_name("vertebrae_L5", "spine")
    'vertebra_L5'
    """
    n = name.strip().lower().replace(" ", "_")
    m = re.fullmatch(r"vertebrae?_([ctls]\d+)", n)
    if m:
        return f"vertebra_{m.group(1).upper()}"
    side = ""
    for suffix in ("_left", "_right"):
        if n.endswith(suffix):
            n, side = n[: -len(suffix)], suffix
    if n == "hip":  # TotalSegmentator "hip" is the whole hip bone (os coxae)
        n = "ilium" if anatomy == "sij" else "acetabulum"
    if anatomy in ("knee", "ankle") and n in ("femur", "tibia", "fibula", "patella"):
        side = ""  # one joint per study: the side is the imaged side
    if anatomy == "sij" and n == "ilium" and not side:
        return n
    return n + side


def label_names_for_mask(labels: NDArray[np.integer], anatomy: str, *,
                         names: Mapping[int, str] | None = None) -> dict[int, str] | None:
    """Names for the labels of a user bone mask, or ``None`` to name them from geometry.

    ``names`` (from :func:`read_label_names`) win; else, when every label present is a
    bone of TotalSegmentator's ``total_mr`` task, its names are used. A binary mask
    (only label 1) gets ``None``.
    """
    present = [int(v) for v in np.unique(labels) if v > 0]
    if not present:
        return None
    if names:
        return {v: canonical_bone_name(names.get(v, f"bone_{v}"), anatomy) for v in present}
    ts = TOTALSEGMENTATOR_MR["total_mr"]
    if all(v in ts for v in present):
        return {v: canonical_bone_name(ts[v], anatomy) for v in present}
    return None


def names_for_bone_mask_file(mask_path: str | Path, labels: NDArray[np.integer], anatomy: str) -> dict[int, str] | None:
    """Names for a ``--bone-mask`` label map: from a sidecar next to it, else TotalSegmentator MR.

    The sidecar is ``<mask stem>.json`` or ``<mask stem>.csv`` (``bones.nii.gz`` ->
    ``bones.json``), mapping label values to names (:func:`read_label_names`).
    """
    p = Path(mask_path)
    stem = p.name[: -len(".nii.gz")] if p.name.endswith(".nii.gz") else p.stem
    names = None
    for ext in (".json", ".csv"):
        side = p.with_name(stem + ext)
        if side.is_file():
            names = read_label_names(side)
            break
    return label_names_for_mask(labels, anatomy, names=names)


# ------------------------------------------------------------------ naming


def _present_labels(bones: NDArray[np.integer]) -> list[int]:
    """The labels > 0 present in ``bones``, ascending (``np.unique`` without sorting the whole volume)."""
    pos = bones[bones > 0]
    if not pos.size:
        return []
    top = int(pos.max())
    if top > 4 * pos.size + 65536:  # sparse huge label values: a bincount would be too long
        return [int(v) for v in np.unique(pos)]
    return np.flatnonzero(np.bincount(pos.astype(np.int64), minlength=top + 1)).tolist()


def bone_centroids_lps(bones: NDArray[np.integer], geom: Geometry) -> dict[int, NDArray[np.float64]]:
    """Centroid (LPS mm) of every label > 0."""
    labels = _present_labels(bones)
    if not labels:
        return {}
    # per-label mean voxel index over the labelled voxels only (C order, the sums ndi.center_of_mass makes)
    where = np.nonzero(bones > 0)
    lab = bones[where].astype(np.int64)
    counts = np.bincount(lab, minlength=labels[-1] + 1).astype(np.float64)
    c = np.stack([np.bincount(lab, weights=w.astype(np.float64), minlength=labels[-1] + 1) for w in where],
                 axis=1)[labels] / counts[labels, None]
    pts = geom.index_to_lps(c.reshape(-1, 3))
    return {lab: pts[i] for i, lab in enumerate(labels)}


def name_bones(bones: NDArray[np.integer], geom: Geometry, anatomy: str) -> dict[int, str]:
    """Name each marrow label from its position and size in patient coordinates.

    knee: of the two largest cavities the superior one is the femur and the other the
    tibia; a further cavity > 10 mm anterior to the femur and above the tibia is the
    patella; one not anterior, at most 15 mm above the tibia's centroid and off its
    long axis (> 15 mm) is the fibula.
    sij: of the three largest, the one between the others (left-right) is the sacrum,
    the others ilium_left (+x) and ilium_right. hip: of the two largest the inferior
    one is the femur, the other the acetabulum. ankle: the largest cavity in the
    upper half is the tibia, a smaller one at its level and off its axis the fibula;
    below the tibia, the nearest is the talus and the largest more inferior-posterior
    one the calcaneus; other cavities are ``tarsal_<n>``. spine: ``vertebra_1``... from
    superior to inferior. Unrecognised cavities keep ``bone_<n>``; names are unique.
    """
    labels = _present_labels(bones)
    if not labels:
        return {}
    sizes = dict(zip(labels, np.bincount(bones[bones > 0].astype(np.int64))[labels].tolist(), strict=True))
    cents = bone_centroids_lps(bones, geom)
    names = {lab: f"bone_{lab}" for lab in labels}
    order = sorted(labels, key=lambda lab: -sizes[lab])
    if anatomy == "knee" and len(order) >= 2:
        sup, inf = sorted(order[:2], key=lambda lab: -cents[lab][2])
        names[sup], names[inf] = "femur", "tibia"
        fem, tib = cents[sup], cents[inf]
        for lab in order[2:]:
            c = cents[lab]
            if "patella" not in names.values() and c[1] < fem[1] - 10 and c[2] > tib[2]:
                names[lab] = "patella"
            elif ("fibula" not in names.values() and c[2] < tib[2] + 15 and c[1] > fem[1] - 10
                  and np.hypot(*(c[:2] - tib[:2])) > 15):
                names[lab] = "fibula"
    elif anatomy == "knee" and order:
        names[order[0]] = "femur"
    elif anatomy == "sij" and len(order) >= 3:
        top = sorted(order[:3], key=lambda lab: cents[lab][0])  # right (-x) to left (+x)
        names[top[0]], names[top[1]], names[top[2]] = "ilium_right", "sacrum", "ilium_left"
    elif anatomy == "hip" and len(order) >= 2:
        sup, inf = sorted(order[:2], key=lambda lab: -cents[lab][2])
        names[sup], names[inf] = "acetabulum", "femur"
    elif anatomy == "ankle" and order:
        _name_ankle(order, cents, sizes, names)
    elif anatomy == "spine":
        for n, lab in enumerate(sorted(order, key=lambda lab: -cents[lab][2]), start=1):
            names[lab] = f"vertebra_{n}"
    seen: set[str] = set()
    for lab in sorted(names):
        if names[lab] in seen:
            names[lab] = f"{names[lab]}_{lab}"
        seen.add(names[lab])
    return names


def _name_ankle(order: list[int], cents: dict[int, NDArray[np.float64]], sizes: dict[int, int],
                names: dict[int, str]) -> None:
    zs = np.array([cents[lab][2] for lab in order])
    z_mid = 0.5 * (zs.min() + zs.max())
    upper = [lab for lab in order if cents[lab][2] >= z_mid]
    tib = upper[0]
    names[tib] = "tibia"
    for lab in upper[1:]:
        if np.hypot(*(cents[lab][:2] - cents[tib][:2])) > 15 and sizes[lab] < sizes[tib]:
            names[lab] = "fibula"
            break
    below = [lab for lab in order if names[lab].startswith("bone_") and cents[lab][2] < cents[tib][2]]
    if below:
        talus = min(below, key=lambda lab: np.linalg.norm(cents[lab] - cents[tib]))
        names[talus] = "talus"
        cand = [lab for lab in below if lab != talus and cents[lab][2] < cents[talus][2]
                and cents[lab][1] > cents[talus][1] - 5]
        if cand:
            names[max(cand, key=lambda lab: sizes[lab])] = "calcaneus"
    for n, lab in enumerate(order, start=1):
        if names[lab].startswith("bone_"):
            names[lab] = f"tarsal_{n}"


def lateral_sign(names: Mapping[int, str], cents: Mapping[int, NDArray[np.float64]],
                 laterality: str = "auto") -> float | None:
    """+1 if lateral is patient left (+x), -1 if patient right, None if unknown.

    The fibula lies lateral to the tibia; else ``laterality`` (the imaged side:
    a left knee's lateral side is patient left).
    """
    inv = {v: k for k, v in names.items()}
    if "fibula" in inv and "tibia" in inv:
        s = float(np.sign(cents[inv["fibula"]][0] - cents[inv["tibia"]][0]))
        if s:
            return s
    if laterality == "left":
        return 1.0
    if laterality == "right":
        return -1.0
    return None


# ------------------------------------------------------------------ articular surface


def articular_depth_mm(
    bones: NDArray[np.integer], geom: Geometry, *, joint_gap_mm: float = 15.0,
) -> tuple[NDArray[np.float32], dict[int, bool]]:
    """Distance (mm) of every marrow voxel from its bone's articular surface.

    Parameters
    ----------
    bones : (I, J, K) int
        Marrow labels, 0 outside.
    geom : Geometry
        Grid of ``bones`` (spacing used for anisotropic distances).
    joint_gap_mm : float
        Boundary voxels of a bone within this distance of another bone's marrow
        face a joint (cartilage, joint space and two cortices lie in between).

    Returns
    -------
    depth : (I, J, K) float32
        Distance to the articular surface in mm; NaN outside marrow.
    jointed : dict
        label -> True when a joint-facing surface was found (False: the whole
        marrow boundary away from the image edge was used instead).
    """
    spacing = geom.spacing_mm
    depth = np.full(bones.shape, np.nan, np.float32)
    jointed: dict[int, bool] = {}
    pad = [int(np.ceil(joint_gap_mm / s)) + 1 for s in spacing]
    for lab in _present_labels(bones):
        box = bbox_slices(bones == lab, pad)
        assert box is not None
        sub = bones[box]
        own = sub == lab
        boundary = own & ~ndi.binary_erosion(own, border_value=1)
        other = (sub > 0) & ~own
        surf = np.zeros_like(own)
        if other.any():
            surf = boundary & (edt(~other, spacing) <= joint_gap_mm)
        jointed[lab] = bool(surf.any())
        if not surf.any():
            surf = boundary
        if not surf.any():  # fills the whole field of view: no surface at all
            continue
        d = edt(~surf, spacing)
        view = depth[box]
        view[own] = d[own]
    return depth, jointed


# ------------------------------------------------------------------ subregions


@dataclass(frozen=True)
class Region:
    """One scoring unit: a bone subregion (``label`` in :attr:`Subregions.labels`)."""

    label: int
    bone: str
    bone_label: int
    region: str


@dataclass(frozen=True)
class Subregions:
    """Subregion label per marrow voxel (0 outside marrow) and what each label is."""

    labels: NDArray[np.int16]
    regions: tuple[Region, ...]
    notes: tuple[str, ...] = ()

    def names(self) -> dict[int, tuple[str, str]]:
        return {r.label: (r.bone, r.region) for r in self.regions}


def subregions(
    bones: NDArray[np.integer], geom: Geometry, names: Mapping[int, str], anatomy: str, *,
    depth_mm: NDArray[np.floating] | None = None, region_depth_mm: float = 0.0, laterality: str = "auto",
) -> Subregions:
    """Split every bone's marrow into the scoring subregions of ``anatomy`` (module docstring).

    Parameters
    ----------
    bones : (I, J, K) int
        Marrow labels; ``names`` maps them to bone names.
    depth_mm : (I, J, K) float, optional
        From :func:`articular_depth_mm`; needed when ``region_depth_mm > 0``.
    region_depth_mm : float
        Only marrow within this depth of the articular surface is divided into
        subregions (0: the whole bone in the field of view).
    laterality : {'auto', 'left', 'right'}
        Imaged side, for medial/lateral when no fibula is seen (knee).
    """
    out = np.zeros(bones.shape, np.int16)
    regions: list[Region] = []
    notes: list[str] = []
    cents = bone_centroids_lps(bones, geom)
    lat = lateral_sign(names, cents, laterality)
    if anatomy == "knee" and lat is None and any(n in ("femur", "tibia", "patella") for n in names.values()):
        notes.append("medial/lateral unknown (no fibula seen, laterality 'auto'): "
                     "knee subregions named by patient left/right")
    sij_split = _sij_split_z(bones, geom, names, depth_mm) if anatomy == "sij" else {}

    def add(bone_label: int, region: str, sel: NDArray[np.intp]) -> None:
        if not len(sel):
            return
        lab = len(regions) + 1
        regions.append(Region(lab, names.get(bone_label, f"bone_{bone_label}"), bone_label, region))
        out[sel[:, 0], sel[:, 1], sel[:, 2]] = lab

    for bl in sorted(names):
        own = bones == bl
        if not own.any():
            continue
        bone = names[bl]
        base = bone.split("_")[0]
        idx = np.argwhere(own)
        p = geom.index_to_lps(idx.astype(np.float64))
        near = np.ones(len(idx), bool)
        if region_depth_mm > 0 and depth_mm is not None and (
                (anatomy == "knee" and base in ("femur", "tibia")) or anatomy == "sij"):
            d = np.asarray(depth_mm)[own]
            near = ~(d > region_depth_mm)
        tags = np.full(len(idx), "whole", dtype=object)
        if anatomy == "knee" and base in ("femur", "tibia", "patella"):
            tags = _knee_tags(base, p, near, lat)
        elif anatomy == "sij" and (base == "sacrum" or base == "ilium"):
            tags = _sij_tags(bone, p, near, sij_split, cents.get(bl))
        uniq, inv = np.unique(tags.astype(str), return_inverse=True)  # sorted like sorted(set(tags))
        for k, tag in enumerate(uniq.tolist()):
            add(bl, str(tag), idx[inv.ravel() == k])
    return Subregions(out, tuple(regions), tuple(notes))


def _side_words(lat: float | None) -> tuple[str, str]:
    """Names of the +x and -x sides."""
    if lat is None:
        return "left", "right"
    return ("lateral", "medial") if lat > 0 else ("medial", "lateral")


def _knee_tags(base: str, p: NDArray[np.float64], near: NDArray[np.bool_], lat: float | None) -> NDArray[np.object_]:
    tags = np.full(len(p), "shaft", dtype=object)
    q = p[near]
    if len(q) == 0:
        return tags
    pos, neg = _side_words(lat)
    x_lo, x_hi = np.percentile(q[:, 0], [2, 98])
    x_mid = 0.5 * (x_lo + x_hi)
    plus = q[:, 0] > x_mid
    if base == "patella":
        tags[near] = np.where(plus, pos, neg).astype(object)
        return tags
    y_lo, y_hi = np.percentile(q[:, 1], [2, 98])
    third = (y_hi - y_lo) / 3.0
    ap = np.where(q[:, 1] < y_lo + third, 0, np.where(q[:, 1] > y_hi - third, 2, 1))
    front = "trochlear" if base == "femur" else "anterior"
    table = np.array([f"{s}_{a}" for s in (neg, pos) for a in (front, "central", "posterior")], dtype=object)
    sub = table[plus.astype(np.intp) * 3 + ap]
    if base == "tibia":  # beneath the tibial spines: the central tenth of the plateau's width
        sub[np.abs(q[:, 0] - x_mid) < 0.1 * (x_hi - x_lo)] = "subspinous"
    tags[near] = sub
    return tags


def _sij_split_z(bones: NDArray[np.integer], geom: Geometry, names: Mapping[int, str],
                 depth_mm: NDArray[np.floating] | None) -> dict[str, float]:
    """Craniocaudal middle (LPS z, mm) of each joint's articular surface: {'left': z, 'right': z}."""
    out: dict[str, float] = {}
    for side in ("left", "right"):
        labs = [lab for lab, n in names.items() if n == f"ilium_{side}"]
        if not labs:
            continue
        own = bones == labs[0]
        if depth_mm is not None:
            surf = own & (np.asarray(depth_mm) <= 2.0 * max(geom.spacing_mm))
            own = surf if surf.any() else own
        z = geom.index_to_lps(np.argwhere(own).astype(np.float64))[:, 2]
        out[side] = float(0.5 * (z.min() + z.max()))
    return out


def _sij_tags(bone: str, p: NDArray[np.float64], near: NDArray[np.bool_], split: Mapping[str, float],
              centroid: NDArray[np.float64] | None) -> NDArray[np.object_]:
    tags = np.full(len(p), "remote", dtype=object)
    if bone == "sacrum":
        x_mid = float(centroid[0]) if centroid is not None else float(np.median(p[:, 0]))
        side = np.where(p[:, 0] > x_mid, "left", "right")
    else:
        side = np.full(len(p), "left" if bone.endswith("left") else "right", dtype=object)
    for s in ("left", "right"):
        z_mid = split.get(s, float(np.median(p[:, 2])))
        m = near & (side == s)
        ud = np.where(p[m, 2] >= z_mid, "upper", "lower")
        tags[m] = [f"{s}_{u}" for u in ud] if bone == "sacrum" else list(ud)
    return tags
