"""Bones, regions, lesion measures and scores on small synthetic label volumes with known truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bmeseg.config import ScoringSettings, load_settings
from bmeseg.errors import ConfigError, InputError
from bmeseg.measure import grade, measure
from bmeseg.regions import (
    BONE_CODES,
    articular_depth_mm,
    canonical_bone_name,
    label_names_for_mask,
    name_bones,
    names_for_bone_mask_file,
    read_label_names,
)
from bmeseg.volume import Geometry

# sagittal series (rows along +y, columns along -z, slices along -x) and an axial one with a flipped i axis
SAGITTAL = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
AXIAL_FLIPPED = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _grid(direction: np.ndarray, shape: tuple[int, int, int], spacing: tuple[float, float, float],
          centre: tuple[float, float, float] = (0.0, 0.0, 5.0)) -> tuple[Geometry, np.ndarray]:
    g0 = Geometry(shape, spacing, (0.0, 0.0, 0.0), direction)
    mid = g0.index_to_lps(np.array([(n - 1) / 2 for n in shape]))
    g = Geometry(shape, spacing, tuple(np.asarray(centre) - mid), direction)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    return g, g.index_to_lps(ijk)


def _knee(direction: np.ndarray, shape: tuple[int, int, int], spacing: tuple[float, float, float]
          ) -> tuple[Geometry, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A right knee (medial = patient left, +x): labels in shuffled order, and three lesions."""
    g, p = _grid(direction, shape, spacing)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    bones = np.zeros(shape, np.int32)
    bones[((x / 38) ** 2 + (y / 30) ** 2 < 1) & (z > 4) & (z < 60)] = 2  # femur
    bones[((x / 40) ** 2 + (y / 30) ** 2 < 1) & (z < -4) & (z > -50)] = 1  # tibia
    bones[(((x + 38) / 7) ** 2 + ((y - 15) / 7) ** 2 < 1) & (z < -15) & (z > -50)] = 3  # fibula (lateral, -x)
    bones[((x / 18) ** 2 + ((y + 45) / 7) ** 2 + ((z - 25) / 18) ** 2) < 1] = 4  # patella
    lesions = {
        # medial femoral condyle, weight-bearing (central), subchondral, ~12 mm deep
        "femur_mc": (bones == 2) & ((((x - 20) / 8) ** 2 + (y / 8) ** 2 + ((z - 10) / 7) ** 2) < 1),
        # lateral tibial plateau, anterior, shallow
        "tibia_la": (bones == 1) & ((((x + 20) / 7) ** 2 + ((y + 15) / 6) ** 2 + ((z + 7) / 4) ** 2) < 1),
        # most of the patella's lateral half (grade 3 by MOAKS bins)
        "patella_l": (bones == 4) & (x < -1.5),
    }
    return g, bones, p, lesions


@pytest.mark.parametrize("direction,shape,spacing", [
    (SAGITTAL, (110, 120, 30), (1.0, 1.1, 3.0)),
    (AXIAL_FLIPPED, (90, 110, 40), (1.0, 1.0, 3.0)),
])
def test_knee_bones_regions_and_lesions(direction: np.ndarray, shape: tuple[int, int, int],
                                        spacing: tuple[float, float, float]) -> None:
    g, bones, p, truth = _knee(direction, shape, spacing)
    bme = np.zeros(shape, bool)
    for m in truth.values():
        bme |= m
    scoring = load_settings("knee").scoring
    m = measure(bme, bones, g, anatomy="knee", scoring=scoring)
    assert m.bone_names == {1: "tibia", 2: "femur", 3: "fibula", 4: "patella"}
    assert not m.warnings
    expect = {"femur_mc": ("femur", "medial_central"), "tibia_la": ("tibia", "lateral_anterior"),
              "patella_l": ("patella", "lateral")}
    for key, (bone, region) in expect.items():
        true_c = p[truth[key]].mean(0)
        les = min(m.lesions, key=lambda le: float(np.linalg.norm(np.asarray(le.centroid_lps_mm) - true_c)))
        assert np.linalg.norm(np.asarray(les.centroid_lps_mm) - true_c) < 5.0
        assert (les.bone, les.region) == (bone, region), key
        assert abs(les.volume_ml - truth[key].sum() * g.voxel_volume_ml) < 1e-9
        lo, hi = np.asarray(les.bbox_lps_mm)
        assert np.all(lo <= true_c) and np.all(true_c <= hi)
    by_key = {k: min(m.lesions, key=lambda le, k=k: float(np.linalg.norm(
        np.asarray(le.centroid_lps_mm) - p[truth[k]].mean(0)))) for k in truth}
    # depth from the joint-facing surface: the femoral lesion reaches 9-12 mm (3 mm slices), the tibial < 10
    assert by_key["femur_mc"].surface_distance_mm < 2.0 and 8.0 < by_key["femur_mc"].depth_mm < 16.0
    assert by_key["tibia_la"].depth_mm < 10.0 and not by_key["tibia_la"].deep
    # extent per bone and subregion against the truth masks
    bones_by = {b.bone: b for b in m.bones}
    for key, (bone, region) in expect.items():
        lab = next(k for k, v in m.bone_names.items() if v == bone)
        frac = truth[key].sum() / (bones == lab).sum()
        assert abs(bones_by[bone].extent_fraction - frac) < 0.05
        reg = next(r for r in m.regions if (r.bone, r.region) == (bone, region))
        assert reg.n_lesions == 1 and reg.grade >= 1
    pat_lat = next(r for r in m.regions if (r.bone, r.region) == ("patella", "lateral"))
    assert pat_lat.extent_fraction > 0.66 and pat_lat.grade == 3
    names = {(r.bone, r.region) for r in m.regions if r.scored}
    assert len([n for n in names if n[0] in ("femur", "tibia", "patella")]) == 15  # MOAKS subregions
    # MOAKS aggregate: sum of subregion grades
    assert m.scores["scheme"] == "moaks" and m.scores["extent_score_max"] == 48  # 15 subregions + fibula
    assert m.extent_score == sum(r.grade for r in m.regions if r.scored)


def test_knee_without_fibula_uses_laterality() -> None:
    g, bones, _, truth = _knee(SAGITTAL, (110, 120, 30), (1.0, 1.1, 3.0))
    bones[bones == 3] = 0
    bme = truth["femur_mc"]
    auto = measure(bme, bones, g, anatomy="knee", scoring=ScoringSettings(region_depth_mm=40.0))
    assert auto.lesions[0].region == "left_central" and any("laterality" in w for w in auto.warnings)
    right = measure(bme, bones, g, anatomy="knee", scoring=ScoringSettings(region_depth_mm=40.0, laterality="right"))
    assert right.lesions[0].region == "medial_central" and not right.warnings


def _sij() -> tuple[Geometry, np.ndarray, np.ndarray]:
    """Semicoronal-like grid: sacrum in the middle, ilia either side, joint gaps of ~8 mm."""
    d = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])  # i: -x, j: -z, k: -y (coronal)
    g, p = _grid(d, (120, 70, 12), (1.0, 1.0, 4.0), centre=(0.0, 0.0, 0.0))
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    bones = np.zeros(g.shape, np.int32)
    joint = (np.abs(z) < 30) & (np.abs(y) < 18)  # the series extends beyond the joint front and back
    bones[(np.abs(x) < 20) & joint] = 2  # sacrum
    bones[(x > 28) & (x < 55) & joint] = 1  # ilium, patient left
    bones[(x < -28) & (x > -55) & joint] = 3  # ilium, patient right
    return g, bones, p


def test_sij_names_quadrants_sparcc_berlin_asas() -> None:
    g, bones, p = _sij()
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    assert name_bones(bones, g, "sij") == {1: "ilium_left", 2: "sacrum", 3: "ilium_right"}
    # a lesion in the lower left iliac quadrant reaching 12 mm from the joint, on 3-4 slices (y -6..+6)
    les = (bones == 1) & (x < 28 + 12.5) & (z < -8) & (z > -20) & (np.abs(y) < 6.5)
    stir_ratio = np.where(les, 3.5, 1.0)  # fluid-bright: "intense"
    scoring = load_settings("sij").scoring
    m = measure(les, bones, g, anatomy="sij", scoring=scoring, stir_ratio=stir_ratio)
    assert [le.bone for le in m.lesions] == ["ilium_left"]
    assert m.lesions[0].region == "lower" and m.lesions[0].deep and m.lesions[0].intense
    n_slices = len(np.unique(np.nonzero(les)[2]))
    assert n_slices in (3, 4)
    # SPARCC: per slice with BME, 1 quadrant + 1 intense (+ 1 where it reaches 10 mm deep), left joint only
    rows = {r["slice"]: r for r in m.scores["slices"]}
    les_slices = set(np.unique(np.nonzero(les)[2]).tolist())
    assert les_slices <= set(rows)
    assert all(rows[k]["right"] == {"quadrants": 0, "intense": False, "deep": False} for k in rows)
    assert all(rows[k]["left"]["quadrants"] == 1 and rows[k]["left"]["intense"] for k in les_slices)
    n_deep = sum(rows[k]["left"]["deep"] for k in rows)
    assert n_deep >= 2  # the slab's front/back faces near the joint are articular too: end slices are shallower
    assert m.scoring_scheme == "sparcc" and m.extent_score == 2 * n_slices + n_deep
    assert m.scores["extent_score_max"] == 72 and len(m.scores["slices"]) == 6
    assert m.scores["asas_positive"]
    quads = m.scores["berlin"]["quadrants"]
    assert set(quads) == {"ilium_left:lower", "ilium_left:upper", "ilium_right:lower", "ilium_right:upper",
                          "sacrum:left_lower", "sacrum:left_upper", "sacrum:right_lower", "sacrum:right_upper"}
    assert quads["ilium_left:lower"] >= 1 and m.scores["berlin"]["score"] == quads["ilium_left:lower"]
    # one small lesion on a single slice: not ASAS positive
    one = np.zeros_like(les)
    k_mid = sorted(les_slices)[1]
    one[:, :, k_mid] = les[:, :, k_mid]
    m1 = measure(one, bones, g, anatomy="sij", scoring=scoring)
    assert not m1.scores["asas_positive"]
    # two separate lesions on that one slice: positive
    two = one.copy()
    two[:, :, k_mid] |= (bones[:, :, k_mid] == 3) & (x[:, :, k_mid] > -36) & (np.abs(z[:, :, k_mid]) < 5)
    assert measure(two, bones, g, anatomy="sij", scoring=scoring).scores["asas_positive"]


def test_articular_depth_uses_mm_and_joint_side() -> None:
    # two slabs facing each other along z across an 8 mm gap; z spacing 3 mm, x 1 mm
    g = Geometry((30, 10, 20), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0), np.eye(3))
    bones = np.zeros(g.shape, np.int32)
    bones[:, :, :8] = 1  # z 0..21 mm
    bones[:, :, 11:] = 2  # z 33..57 mm
    depth, jointed = articular_depth_mm(bones, g, joint_gap_mm=15.0)
    assert jointed == {1: True, 2: True}
    assert depth[15, 5, 7] == 0 and depth[15, 5, 0] == pytest.approx(21.0)
    assert depth[15, 5, 11] == 0 and depth[15, 5, 19] == pytest.approx(24.0)
    assert np.isnan(depth[15, 5, 9])


def test_grade_bins() -> None:
    edges = (0.0, 0.33, 0.66)
    assert [grade(f, edges) for f in (0.0, 0.01, 0.33, 0.34, 0.66, 0.67, 1.0)] == [0, 1, 1, 2, 2, 3, 3]


def test_totalsegmentator_names_and_sidecars(tmp_path: Path) -> None:
    lab = np.zeros((4, 4, 4), np.int32)
    lab[0], lab[1], lab[2] = 18, 38, 39  # total_mr: sacrum, hip_left, hip_right
    assert label_names_for_mask(lab, "sij") == {18: "sacrum", 38: "ilium_left", 39: "ilium_right"}
    assert label_names_for_mask((lab > 0).astype(np.int32), "sij") is None  # binary: named from geometry
    assert canonical_bone_name("femur_left", "hip") == "femur_left"
    assert canonical_bone_name("hip_right", "hip") == "acetabulum_right"
    assert canonical_bone_name("vertebrae_T12", "spine") == "vertebra_T12"
    (tmp_path / "bones.json").write_text(json.dumps({"1": "femur", "2": "tibia"}))
    (tmp_path / "b2.csv").write_text("label,name\n1,Tibia\n2,patella\n")
    knee = np.array([[[1, 2]]], np.int32)
    assert names_for_bone_mask_file(tmp_path / "bones.nii.gz", knee, "knee") == {1: "femur", 2: "tibia"}
    assert read_label_names(tmp_path / "b2.csv") == {1: "Tibia", 2: "patella"}
    assert names_for_bone_mask_file(tmp_path / "b2.nii", knee, "knee") == {1: "tibia", 2: "patella"}
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InputError):
        read_label_names(tmp_path / "bad.json")


def test_user_bone_names_are_used() -> None:
    g, bones, _, truth = _knee(SAGITTAL, (110, 120, 30), (1.0, 1.1, 3.0))
    names = {1: "tibia", 2: "femur", 3: "fibula", 4: "patella"}
    m = measure(truth["tibia_la"], bones, g, anatomy="knee", scoring=ScoringSettings(), bone_names=names)
    assert m.bone_names == names and m.lesions[0].bone == "tibia"


def test_bone_codes_are_pydicoms() -> None:
    from pydicom.sr.codedict import codes

    for name, (value, _) in BONE_CODES.items():
        attr = {"navicular": "BoneStructureOfNavicular"}.get(name, name.capitalize())
        assert getattr(codes.SCT, attr).value == value, name


def test_scoring_settings_checked() -> None:
    with pytest.raises(ConfigError, match="laterality"):
        load_settings("knee", overrides={"scoring": {"laterality": "up"}})
    with pytest.raises(ConfigError, match="seg_segments"):
        load_settings("knee", overrides={"scoring": {"seg_segments": "all"}})


def test_synthetic_knee_study_truth(tmp_path: Path) -> None:
    """On the synth phantom's truth maps: bone names, lesion bone/side/centroid and extent match truth.json."""
    synth = pytest.importorskip("bmeseg.synth")
    from bmeseg.io.nifti import read_nifti

    tr = synth.make_study(tmp_path / "s", synth.StudySpec.tiny(), seed=1)
    truth = json.loads(tr.truth_json.read_text())
    bone = read_nifti(tr.bone_map, dtype=np.int32)
    bme = read_nifti(tr.bme_mask, dtype=np.int32).array > 0
    present = {int(v) for v in np.unique(bone.array) if v > 0}
    assert name_bones(bone.array, bone.geometry, "knee") == {k: truth["bone_labels"][str(k)] for k in present}
    # the phantom is a right knee (medial = patient left); its fibula may be out of the small field of view
    m = measure(bme, bone.array, bone.geometry, anatomy="knee",
                scoring=ScoringSettings(region_depth_mm=40.0, laterality="right"))
    for t in truth["lesions"]:
        les = min(m.lesions, key=lambda le, t=t: float(np.linalg.norm(
            np.asarray(le.centroid_lps_mm) - np.asarray(t["centroid_lps_mm"]))))
        assert np.linalg.norm(np.asarray(les.centroid_lps_mm) - np.asarray(t["centroid_lps_mm"])) < 5.0
        assert les.bone == t["bone"]
        for side in ("medial", "lateral"):
            if t["location"].startswith(side):
                assert les.region.startswith(side), (les.region, t["location"])
    for b in m.bones:
        frac = (bme & (bone.array == b.label)).sum() / (bone.array == b.label).sum()
        assert abs(b.extent_fraction - frac) < 0.05 and b.grade == grade(frac, (0.0, 0.33, 0.66))


def test_bme_across_a_joint_is_one_lesion_per_bone() -> None:
    # BME on both sides of the left joint, touching across the joint space where the bones meet: each
    # side is its own lesion, with its own bone and quadrant (one lesion named by the majority bone
    # with the other bone's quadrant was the old answer)
    g, bones, p = _sij()
    x, z = p[..., 0], p[..., 2]
    bones = bones.copy()
    bones[(x >= 20) & (x <= 28) & (np.abs(z) < 30) & (bones == 0) & (np.abs(p[..., 1]) < 18)] = 2  # no joint gap
    les = (bones > 0) & (x > 12) & (x < 36) & (z > 5) & (z < 20)
    m = measure(les, bones, g, anatomy="sij", scoring=load_settings("sij").scoring)
    got = sorted((le.bone, le.region) for le in m.lesions)
    assert got == [("ilium_left", "upper"), ("sacrum", "left_upper")], got
    assert abs(sum(le.volume_ml for le in m.lesions) - les.sum() * g.voxel_volume_ml) < 1e-9


def test_a_rim_over_a_bone_edge_stays_with_its_lesion() -> None:
    g, bones, p = _sij()
    x, z = p[..., 0], p[..., 2]
    bones = bones.copy()
    bones[(x >= 20) & (x <= 28) & (np.abs(z) < 30) & (bones == 0) & (np.abs(p[..., 1]) < 18)] = 2
    # an iliac lesion whose edge reaches one voxel into the sacrum: still one lesion, in the ilium
    les = (bones > 0) & (x > 26.5) & (x < 40) & (z > 5) & (z < 20)
    assert np.unique(bones[les]).tolist() == [1, 2]
    m = measure(les, bones, g, anatomy="sij", scoring=load_settings("sij").scoring)
    assert [(le.bone, le.region) for le in m.lesions] == [("ilium_left", "upper")]
    assert m.lesions[0].n_voxels == les.sum()
