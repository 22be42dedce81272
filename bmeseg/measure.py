"""Lesions, where they are, how big, and extent scores per bone and subregion.

Bone names, articular surfaces and subregions come from :mod:`bmeseg.regions`
(patient coordinates, LPS: +x left, +y posterior, +z superior; never array
axes), so the same rules work for sagittal, coronal and axial acquisitions.

Scores (``ScoringSettings.scheme``; grade bins ``grade_edges``, default 0 / 33 / 66 %)
-------------------------------------------------------------------------------------
Every bone and every subregion gets ``extent_fraction`` = BME marrow volume / marrow
volume and ``grade`` = :func:`grade` of it (0 none; 1 up to 33 %; 2 33-66 %; 3 above
66 %). The study-level ``extent_score`` is the scheme's aggregate:

``moaks`` (knee OA)
    Sum of the MOAKS BML size grades (0-3) over the subregions (15 in a knee with
    patella, femur and tibia: max 45); bones without subregions count once;
    ``shaft`` marrow is not scored. Lesion counts per subregion are reported.
``ramris`` (OMERACT RAMRIS osteitis)
    Sum of the per-bone grades (0-3 per bone).
``sparcc`` (SPARCC SIJ)
    On the ``sparcc_slices`` (6) consecutive slices with the most joint surface: per
    slice and joint, 1 per quadrant (ilium upper/lower, sacrum upper/lower) with BME,
    +1 if the joint has an *intense* lesion on that slice (mean STIR >= ``intense_ratio``
    x normal marrow, fluid-like), +1 if BME on that slice reaches ``deep_mm`` (10 mm)
    from the articular surface. Max 6 x 2 x 6 = 72. Also reported: the Berlin score
    (sum of the quadrant grades, max 24) and ASAS positivity (BME on >= 2 consecutive
    slices, or >= 2 lesions on one slice).
``fraction`` (generic)
    Sum of the per-bone grades, as ``ramris``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from .config import ScoringSettings
from .regions import _present_labels, articular_depth_mm, bone_centroids_lps, name_bones, subregions
from .volume import Geometry

__all__ = ["BoneExtent", "Lesion", "Measurements", "RegionExtent", "grade", "measure", "name_bones"]

#: subregion names that are reported but never graded into the study score
UNSCORED_REGIONS = ("shaft", "remote")


@dataclass(frozen=True)
class Lesion:
    """One connected BME lesion (ids run 1..N by decreasing volume).

    ``depth_mm`` is how far the lesion reaches into the bone from the articular
    surface (max over its voxels), ``surface_distance_mm`` how close it comes to it
    (min); ``deep`` is ``depth_mm >= deep_mm`` (SPARCC). ``slice_range`` is the
    first and last ``k`` index (slices of the fluid-sensitive series, 0-based).
    """

    id: int
    volume_ml: float
    centroid_lps_mm: tuple[float, float, float]
    bbox_lps_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    slice_range: tuple[int, int]
    bone: str
    region: str
    mean_stir_ratio: float
    mean_t1_ratio: float
    intense: bool
    depth_mm: float = float("nan")
    surface_distance_mm: float = float("nan")
    deep: bool = False
    n_voxels: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "volume_ml": round(self.volume_ml, 4),
            "centroid_lps_mm": [round(v, 2) for v in self.centroid_lps_mm],
            "bbox_lps_mm": [[round(v, 2) for v in c] for c in self.bbox_lps_mm],
            "slice_range": list(self.slice_range),
            "bone": self.bone,
            "region": self.region,
            "mean_stir_ratio": round(self.mean_stir_ratio, 3),
            "mean_t1_ratio": round(self.mean_t1_ratio, 3),
            "intense": self.intense,
            "depth_mm": round(self.depth_mm, 2),
            "surface_distance_mm": round(self.surface_distance_mm, 2),
            "deep": self.deep,
            "n_voxels": self.n_voxels,
        }


@dataclass(frozen=True)
class BoneExtent:
    """Extent of BME in one bone's marrow."""

    bone: str
    label: int
    marrow_volume_ml: float
    bme_volume_ml: float
    extent_fraction: float
    grade: int
    n_lesions: int
    articular_surface_found: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "bone": self.bone,
            "label": self.label,
            "marrow_volume_ml": round(self.marrow_volume_ml, 3),
            "bme_volume_ml": round(self.bme_volume_ml, 4),
            "extent_fraction": round(self.extent_fraction, 4),
            "grade": self.grade,
            "n_lesions": self.n_lesions,
            "articular_surface_found": self.articular_surface_found,
        }


@dataclass(frozen=True)
class RegionExtent:
    """Extent of BME in one subregion (MOAKS subregion, SPARCC/Berlin quadrant...)."""

    bone: str
    region: str
    label: int
    marrow_volume_ml: float
    bme_volume_ml: float
    extent_fraction: float
    grade: int
    n_lesions: int
    scored: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "bone": self.bone,
            "region": self.region,
            "label": self.label,
            "marrow_volume_ml": round(self.marrow_volume_ml, 3),
            "bme_volume_ml": round(self.bme_volume_ml, 4),
            "extent_fraction": round(self.extent_fraction, 4),
            "grade": self.grade,
            "n_lesions": self.n_lesions,
            "scored": self.scored,
        }


@dataclass(frozen=True)
class Measurements:
    lesion_labels: NDArray[np.uint8]  # 0 background, 1..N lesion ids
    lesions: tuple[Lesion, ...]
    bones: tuple[BoneExtent, ...]
    marrow_volume_ml: float
    bme_volume_ml: float
    extent_fraction: float
    extent_score: int
    scoring_scheme: str
    bone_names: dict[int, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    regions: tuple[RegionExtent, ...] = ()
    #: subregion label per voxel (0 outside marrow); ``regions[i].label`` indexes it
    region_labels: NDArray[np.int16] | None = None
    #: scheme details: ``extent_score_max``, SPARCC per-slice counts, Berlin, ASAS...
    scores: dict[str, Any] = field(default_factory=dict)


def grade(fraction: float, edges: tuple[float, ...]) -> int:
    """Extent grade: 0 when no BME, else the number of ``edges`` the fraction exceeds.

    With the default ``(0, 0.33, 0.66)``: 0 none; 1 up to 33 %; 2 33-66 %; 3 above 66 %
    (RAMRIS / MOAKS thirds).

    >>> [grade(f, (0.0, 0.33, 0.66)) for f in (0.0, 0.1, 0.5, 0.9)]
    [0, 1, 2, 3]
    """
    if fraction <= 0:
        return 0
    return int(sum(fraction > e for e in edges))


def _majority(values: NDArray[np.integer], labels: NDArray[np.integer], n: int) -> NDArray[np.int64]:
    """Most frequent non-zero value of ``values`` under each label 1..n (0 if none; ties: the smallest)."""
    if n == 0:
        return np.zeros(0, np.int64)
    sel = (labels > 0) & (values > 0)
    lab = labels[sel].astype(np.int64)
    val = values[sel].astype(np.int64)
    if not lab.size:
        return np.zeros(n, np.int64)
    width = int(val.max()) + 1
    counts = np.bincount(lab * width + val, minlength=(n + 1) * width).reshape(n + 1, width)[1:]
    best = counts.argmax(axis=1)  # first (smallest) value among equal counts, like bincount().argmax()
    return np.where(counts.max(axis=1) > 0, best, 0).astype(np.int64)


def _label_means(values: NDArray[np.floating] | None, lab: NDArray[np.int64], where: tuple[NDArray[np.intp], ...],
                 counts: NDArray[np.int64]) -> NDArray[np.float64]:
    """Mean of ``values`` over each label 1..n, from the labelled voxels only (1 when ``values`` is None)."""
    if values is None:
        return np.ones(len(counts) - 1)
    sums = np.bincount(lab, weights=np.asarray(values)[where].astype(np.float64), minlength=len(counts))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts)[1:]


def _label_per_bone(bme: NDArray[np.bool_], bones: NDArray[np.integer], structure: NDArray[np.bool_],
                    *, min_share: float = 0.1) -> tuple[NDArray[np.int32], int]:
    """Connected BME components within each bone: BME on both sides of a joint is one lesion per bone
    (its bone, subregion and depth are then those of one bone). Voxels outside every bone form their own
    components. A part smaller than ``min_share`` of its whole component (a rim of a few voxels over a
    bone's edge) stays with the component's largest part instead of becoming a lesion of its own."""
    whole, n_whole = ndi.label(bme, structure=structure)
    lab = np.zeros(bme.shape, np.int32)
    n = 0
    key = np.where(bme, bones, -1)
    for b in np.unique(key[bme]):
        part, k = ndi.label(key == b, structure=structure)
        lab[part > 0] = part[part > 0] + n
        n += int(k)
    if n <= n_whole:
        return lab, n
    where = np.nonzero(lab)
    part_of, comp_of = lab[where], whole[where]
    size = np.bincount(part_of, minlength=n + 1)
    comp = np.zeros(n + 1, np.int64)
    comp[part_of] = comp_of  # each part lies in one component
    comp_size = np.bincount(comp_of, minlength=n_whole + 1)
    # the largest part of each component (ties: the lower label)
    order = np.lexsort((np.arange(1, n + 1), -size[1:]))
    biggest = np.zeros(n_whole + 1, np.int64)
    for p in order[::-1] + 1:
        biggest[comp[p]] = p
    target = np.arange(n + 1)
    small = size < min_share * comp_size[comp]
    small[0] = False
    target[small] = biggest[comp[small]]
    kept, new = np.unique(target[1:], return_inverse=True)
    remap = np.concatenate([[0], new + 1]).astype(np.int32)
    return remap[lab], int(kept.size)


def measure(
    bme: NDArray[np.bool_],
    bones: NDArray[np.integer],
    geom: Geometry,
    *,
    anatomy: str,
    scoring: ScoringSettings,
    stir_ratio: NDArray[np.floating] | None = None,
    t1_ratio: NDArray[np.floating] | None = None,
    intense_ratio: float = 3.0,
    connectivity: int = 26,
    bone_names: Mapping[int, str] | None = None,
) -> Measurements:
    """Label lesions and compute location, depth, volume and extent per bone and subregion.

    Parameters
    ----------
    bme : (I, J, K) bool
        BME voxels on the grid ``geom``.
    bones : (I, J, K) int
        Marrow labels (0 outside marrow).
    geom : Geometry
    anatomy : str
        Preset anatomy: bone naming and subregions (:mod:`bmeseg.regions`).
    scoring : ScoringSettings
        Scheme, grade bins, deep threshold, joint gap, subregion depth, laterality.
    stir_ratio, t1_ratio : (I, J, K) float, optional
        Signal relative to local normal marrow (from the edema step).
    intense_ratio : float
        Mean STIR ratio at or above which a lesion is "intense" (fluid-like).
    bone_names : mapping, optional
        Names of the ``bones`` labels (user label map); default: from geometry.

    Returns
    -------
    Measurements
        Lesions are connected BME within one bone; ids run 1..N by decreasing volume; ``extent_score`` is the scheme's
        aggregate (module docstring).
    """
    vox = geom.voxel_volume_ml
    structure = ndi.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
    lab, n = _label_per_bone(bme, bones, structure)
    warnings: list[str] = []
    if n > 255:
        warnings.append(f"{n} lesions found; only the 255 largest are labelled in bme_mask.nii.gz")
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    order = np.argsort(-sizes[1:], kind="stable")[:255] + 1
    remap = np.zeros(n + 1, np.uint8)
    remap[order] = np.arange(1, len(order) + 1, dtype=np.uint8)
    lesion_labels = remap[lab]
    n = len(order)

    present = _present_labels(bones)
    names = dict(bone_names) if bone_names else name_bones(bones, geom, anatomy)
    for b in present:
        names.setdefault(b, f"bone_{b}")
    names = {b: names[b] for b in present}
    depth, jointed = articular_depth_mm(bones, geom, joint_gap_mm=scoring.joint_gap_mm)
    sub = subregions(bones, geom, names, anatomy, depth_mm=depth, region_depth_mm=scoring.region_depth_mm,
                     laterality=scoring.laterality)
    warnings.extend(sub.notes)
    region_names = sub.names()
    if anatomy == "sij" and geom.plane() != "coronal":
        warnings.append(f"SPARCC counts slices of a {geom.plane()} series; it is defined on semicoronal slices")

    lesions: list[Lesion] = []
    if n:
        # per-lesion reductions over the lesion voxels only (C order, as scipy.ndimage would visit them)
        where = np.nonzero(lesion_labels)
        lid = lesion_labels[where].astype(np.int64)
        counts = np.bincount(lid, minlength=n + 1)
        cidx = np.stack([np.bincount(lid, weights=w.astype(np.float64), minlength=n + 1)[1:] for w in where],
                        axis=1) / counts[1:, None]
        cents = geom.index_to_lps(cidx.reshape(-1, 3))
        objs = ndi.find_objects(lesion_labels)
        bone_of = _majority(bones, lesion_labels, n)
        region_of = _majority(sub.labels, lesion_labels, n)
        ms = _label_means(stir_ratio, lid, where, counts)
        mt = _label_means(t1_ratio, lid, where, counts)
        d_les = np.asarray(depth)[where]
        finite = np.isfinite(d_les)
        has_depth = np.bincount(lid[finite], minlength=n + 1)[1:] > 0
        dmax = np.full(n + 1, -np.inf)
        dmin = np.full(n + 1, np.inf)
        np.maximum.at(dmax, lid[finite], d_les[finite])
        np.minimum.at(dmin, lid[finite], d_les[finite])
        dmax, dmin = dmax[1:], dmin[1:]
        for i in range(n):
            sl = objs[i]
            assert sl is not None
            corners = np.array([[x, y, z] for x in (sl[0].start - 0.5, sl[0].stop - 0.5)
                                for y in (sl[1].start - 0.5, sl[1].stop - 0.5)
                                for z in (sl[2].start - 0.5, sl[2].stop - 0.5)])
            pts = geom.index_to_lps(corners)
            b = int(bone_of[i])
            r = int(region_of[i])
            dep = float(dmax[i]) if has_depth[i] else float("nan")
            lesions.append(Lesion(
                id=i + 1,
                volume_ml=float(sizes[order[i]] * vox),
                centroid_lps_mm=(float(cents[i, 0]), float(cents[i, 1]), float(cents[i, 2])),
                bbox_lps_mm=(tuple(float(v) for v in pts.min(0)), tuple(float(v) for v in pts.max(0))),  # type: ignore[arg-type]
                slice_range=(int(sl[2].start), int(sl[2].stop - 1)),
                bone=names.get(b, "outside_marrow") if b else "outside_marrow",
                region=region_names[r][1] if r else "unknown",
                mean_stir_ratio=float(ms[i]),
                mean_t1_ratio=float(mt[i]),
                intense=bool(ms[i] >= intense_ratio),
                depth_mm=dep,
                surface_distance_mm=float(dmin[i]) if has_depth[i] else float("nan"),
                deep=bool(has_depth[i] and dep >= scoring.deep_mm),
                n_voxels=int(sizes[order[i]]),
            ))

    in_marrow = bones > 0
    bme_in = bme & in_marrow
    n_marrow = int(np.count_nonzero(in_marrow))
    top = max(present, default=0)
    mv_all = np.bincount(bones[in_marrow].astype(np.int64), minlength=top + 1)
    bv_all = np.bincount(bones[bme_in].astype(np.int64), minlength=top + 1)
    extents: list[BoneExtent] = []
    for b in present:
        mv, bv = int(mv_all[b]), int(bv_all[b])
        frac = bv / mv if mv else 0.0
        extents.append(BoneExtent(
            bone=names[b], label=b, marrow_volume_ml=mv * vox, bme_volume_ml=bv * vox, extent_fraction=frac,
            grade=grade(frac, scoring.grade_edges), n_lesions=sum(1 for les in lesions if les.bone == names[b]),
            articular_surface_found=jointed.get(b, False),
        ))
    nr = len(sub.regions)
    rmv = np.bincount(sub.labels.ravel(), minlength=nr + 1)
    rbv = np.bincount(sub.labels[bme_in].ravel(), minlength=nr + 1)
    # lesions touching each region (a lesion may count in two neighbouring subregions, as readers count)
    in_lesion = lesion_labels > 0
    pair_keys = np.unique(sub.labels[in_lesion].astype(np.int64) * 256 + lesion_labels[in_lesion])
    touch = np.bincount(pair_keys // 256, minlength=nr + 1)
    reg_ext: list[RegionExtent] = []
    for reg in sub.regions:
        frac = float(rbv[reg.label] / rmv[reg.label]) if rmv[reg.label] else 0.0
        reg_ext.append(RegionExtent(
            bone=reg.bone, region=reg.region, label=reg.label, marrow_volume_ml=float(rmv[reg.label] * vox),
            bme_volume_ml=float(rbv[reg.label] * vox), extent_fraction=frac,
            grade=grade(frac, scoring.grade_edges), n_lesions=int(touch[reg.label]),
            scored=reg.region not in UNSCORED_REGIONS,
        ))
    scores = _scores(scoring, anatomy, extents, reg_ext, sub, bme_in, lesion_labels, lesions, depth, geom, warnings)
    return Measurements(
        lesion_labels=lesion_labels,
        lesions=tuple(lesions),
        bones=tuple(extents),
        marrow_volume_ml=float(n_marrow * vox),
        bme_volume_ml=float(np.count_nonzero(bme) * vox),
        extent_fraction=float(np.count_nonzero(bme_in) / max(n_marrow, 1)),
        extent_score=int(scores["extent_score"]),
        scoring_scheme=scoring.scheme,
        bone_names=names,
        warnings=tuple(warnings),
        regions=tuple(reg_ext),
        region_labels=sub.labels,
        scores=scores,
    )


def _scores(
    scoring: ScoringSettings, anatomy: str, bones: list[BoneExtent], regions: list[RegionExtent],
    sub: Any, bme_in: NDArray[np.bool_], lesion_labels: NDArray[np.uint8], lesions: list[Lesion],
    depth: NDArray[np.float32], geom: Geometry, warnings: list[str],
) -> dict[str, Any]:
    scheme = scoring.scheme
    top = len(scoring.grade_edges)
    out: dict[str, Any] = {"scheme": scheme}
    if scheme == "moaks":
        scored = [r for r in regions if r.scored]
        divided = {r.bone for r in scored if r.region != "whole"}
        units = [r.grade for r in scored if r.region != "whole"] + [
            b.grade for b in bones if b.bone not in divided]
        out.update(extent_score=int(sum(units)), extent_score_max=top * len(units),
                   aggregate="sum of MOAKS BML size grades over subregions",
                   lesion_count=len(lesions))
    elif scheme == "sparcc":
        out.update(_sparcc(scoring, sub, bme_in, lesion_labels, lesions, depth, geom, warnings))
        quads = [r for r in regions if r.scored and (r.bone == "sacrum" or r.bone.startswith("ilium"))]
        out["berlin"] = {"score": int(sum(r.grade for r in quads)), "max": top * 8,
                         "quadrants": {f"{r.bone}:{r.region}": r.grade for r in quads}}
    else:
        out.update(extent_score=int(sum(b.grade for b in bones)), extent_score_max=top * len(bones),
                   aggregate="sum of per-bone grades")
    return out


def _sparcc(scoring: ScoringSettings, sub: Any, bme_in: NDArray[np.bool_], lesion_labels: NDArray[np.uint8],
            lesions: list[Lesion], depth: NDArray[np.float32], geom: Geometry,
            warnings: list[str]) -> dict[str, Any]:
    """SPARCC SIJ total over the central ``sparcc_slices`` slices, plus ASAS positivity."""
    quad: dict[str, list[int]] = {"left": [], "right": []}
    for r in sub.regions:
        if r.region in UNSCORED_REGIONS:
            continue
        if r.bone == "sacrum":
            quad[r.region.split("_")[0]].append(r.label)
        elif r.bone in ("ilium_left", "ilium_right"):
            quad[r.bone.split("_")[1]].append(r.label)
    nk = bme_in.shape[2]
    joint_mask = np.isin(sub.labels, quad["left"] + quad["right"])
    if not joint_mask.any():
        warnings.append("SPARCC: no sacroiliac joint quadrants found (need sacrum and ilia); score 0")
        return {"extent_score": 0, "extent_score_max": 72, "aggregate": "SPARCC SIJ total", "slices": [],
                "asas_positive": False}
    surf_per_slice = (joint_mask & (depth <= 2.0 * max(geom.spacing_mm))).sum(axis=(0, 1))
    n_sl = min(scoring.sparcc_slices, nk)
    if n_sl < scoring.sparcc_slices:
        warnings.append(f"SPARCC: only {nk} slices; scored all of them (defined on {scoring.sparcc_slices})")
    window = np.convolve(surf_per_slice, np.ones(n_sl), mode="valid")
    # the window with the most joint surface; ties go to the one centred on the joint
    centre = float(np.average(np.arange(nk), weights=surf_per_slice)) if surf_per_slice.sum() else nk / 2
    best = np.flatnonzero(window >= window.max() - 1e-9)
    k0 = int(best[np.argmin(np.abs(best + (n_sl - 1) / 2 - centre))])
    intense_ids = np.array([les.id for les in lesions if les.intense], dtype=np.int64)
    total = 0
    per_slice = []
    for k in range(k0, k0 + n_sl):
        row: dict[str, Any] = {"slice": k}
        for side in ("left", "right"):
            labs = sub.labels[:, :, k]
            b = bme_in[:, :, k]
            q = sum(int(np.any(b & (labs == lab))) for lab in quad[side])
            m = b & np.isin(labs, quad[side])
            intense = bool(intense_ids.size and np.any(np.isin(lesion_labels[:, :, k][m], intense_ids)))
            deep = bool(np.any(depth[:, :, k][m] >= scoring.deep_mm))
            row[side] = {"quadrants": q, "intense": intense, "deep": deep}
            total += q + int(intense) + int(deep)
        per_slice.append(row)
    # ASAS: subchondral BME on >= 2 consecutive slices, or >= 2 lesions on one slice
    in_joint = bme_in & joint_mask
    per_k = [ndi.label(in_joint[:, :, k], structure=np.ones((3, 3), bool))[1] for k in range(nk)]
    ids = np.unique(lesion_labels[in_joint])
    consecutive = any(len(np.unique(np.nonzero(in_joint & (lesion_labels == i))[2])) >= 2 for i in ids if i)
    asas = bool(consecutive or (max(per_k) if per_k else 0) >= 2)
    return {"extent_score": total, "extent_score_max": 12 * n_sl, "aggregate": "SPARCC SIJ total",
            "slices": per_slice, "asas_positive": asas,
            "asas_rule": ">= 2 consecutive slices or >= 2 lesions on one slice"}


def bone_centroids(bones: NDArray[np.integer], geom: Geometry) -> dict[int, tuple[float, float, float]]:
    """Centroid (LPS mm) of every bone label (convenience for reports and tests)."""
    return {k: (float(v[0]), float(v[1]), float(v[2])) for k, v in bone_centroids_lps(bones, geom).items()}
