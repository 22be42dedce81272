"""Phantom validation in miniature: the real pipeline on tiny synthetic studies with known truth.

The full cohort is ``benchmarks/validate_phantoms.py``; this checks, in a few seconds, that its
scoring works and that a lesion is found (and nothing is found without one) end to end from DICOM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bmeseg.config import load_settings
from bmeseg.pipeline import StudyInput, run_study
from bmeseg.synth import LesionSpec, StudySpec, make_study

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import validate_phantoms as vp


def _run(root: Path, spec: StudySpec, seed: int) -> dict[str, Any]:
    truth = make_study(root, spec, seed=seed)
    res = run_study(StudyInput(dicom_dir=root / "dicom"), None, settings=load_settings("knee"))
    assert res.stir.geometry.same_grid(truth.bme_labels.geometry, tol_mm=1e-2)
    return vp.evaluate(res.measurements.lesion_labels > 0, truth.bme_labels.array, res.stir.geometry.voxel_volume_ml)


def test_evaluate_scores_a_known_answer() -> None:
    truth = np.zeros((10, 10, 4), np.int32)
    truth[1:4, 1:4, 1] = 1  # 9 voxels
    truth[6:8, 6:8, 2] = 2  # 4 voxels, missed
    pred = np.zeros(truth.shape, bool)
    pred[1:4, 1:3, 1] = True  # 6 inside lesion 1
    pred[0, 0, 0] = True  # 1 false positive
    r = vp.evaluate(pred, truth, 0.1)
    assert r["dice"] == pytest.approx(2 * 6 / (7 + 13))
    assert r["fp_ml"] == pytest.approx(0.1)
    assert r["volume_error_pct"] == pytest.approx(100 * (7 - 13) / 13)
    assert [x["detected"] for x in r["lesions"]] == [True, False]
    assert [x["counts"] for x in r["lesions"]] == [True, True]
    reach = np.ones(truth.shape, bool)
    reach[6:, :, :] = False  # the T1 stops short of lesion 2, and of a third of lesion 1
    reach[3, :, :] = False
    r2 = vp.evaluate(pred, truth, 0.1, reach)
    assert [x["t1_reach"] for x in r2["lesions"]] == pytest.approx([2 / 3, 0.0])
    s = vp.summarise([{**r2, "seconds": 1.0, "detect_s": 1.0}])
    assert s["missed"] == [0.4] and s["missed_beyond_t1"] == [0.4]


def test_tiny_knee_lesion_found(tmp_path: Path) -> None:
    r = _run(tmp_path / "les", StudySpec.tiny(lesions=(LesionSpec("femur", 4.0, "medial_condyle"),)), 1)
    assert r["dice"] > 0.8  # 0.86 when written
    assert abs(r["volume_error_pct"]) < 25.0
    assert all(x["detected"] for x in r["lesions"])


def test_tiny_knee_without_lesion_is_clean(tmp_path: Path) -> None:
    r = _run(tmp_path / "neg", StudySpec.tiny(lesions=(), red_marrow=True, effusion=0.8), 4)
    assert r["pred_ml"] <= 0.2


def test_cohort_keeps_the_knee_ids_and_adds_sij_kinds_to_both_halves() -> None:
    for half, base in (("tune", vp.TUNE_SEEDS_BASE), ("report", vp.REPORT_SEEDS_BASE)):
        knee = vp.cohort(half, "knee")
        sij = vp.cohort(half, "sij")
        assert vp.cohort(half) == knee + sij
        # the knee part predates the SIJ part: ids and seeds must not move
        assert [(sid, seed) for sid, _, seed in knee] == [
            (f"{half}-{i:02d}-{k.name}", base + i) for i, k in enumerate(vp.KNEE_KINDS)]
        assert [k for _, k, _ in sij] == list(vp.SIJ_KINDS)
        assert all(k.anatomy == "sij" for _, k, _ in sij)
    seeds = [seed for half in ("tune", "report") for _, _, seed in vp.cohort(half)]
    assert len(set(seeds)) == len(seeds)
    kinds = vp.SIJ_KINDS
    assert {k.field_t for k in kinds} == {1.5, 3.0} and {k.vendor for k in kinds} == {"siemens", "ge", "philips"}
    assert {k.fluid_plane for k in kinds} == {"semicoronal", "semiaxial"} and {k.fluid_type for k in kinds} == {
        "stir", "t2fs"}
    assert sum(bool(k.negative) for k in kinds) >= 2


def test_sij_specs_put_lesions_on_both_sides_of_the_joint() -> None:
    from bmeseg.synth.sij import SIJ_LOCATIONS

    vols = []
    for half in ("tune", "report"):
        for _, kind, seed in vp.cohort(half, "sij"):
            spec = vp.study_spec(kind, seed)
            assert spec.anatomy == "sij" and spec.fluid_type == kind.fluid_type
            assert spec.fluid_oblique_deg[0] > 15 and spec.t1_oblique_deg[0] > 15  # semicoronal / semiaxial tilt
            locs = [ls.location for ls in spec.lesions]
            if kind.negative:
                assert not locs
                continue
            assert len(set(locs)) == len(locs) and set(locs) <= set(SIJ_LOCATIONS)
            if len(locs) >= 2:
                assert any("_SACRAL_" in x for x in locs) and any("_ILIAC_" in x for x in locs)
            vols += [ls.volume_ml for ls in spec.lesions]
    assert 0.2 <= min(vols) < 0.5 and 5.0 < max(vols) <= 15.0
    by_name = {k.name: k for k in vp.SIJ_KINDS}
    assert vp.study_spec(by_name["sij-neg-joint-fluid"], 1).effusion == 1.0
    assert vp.study_spec(by_name["sij-neg-red-marrow"], 1).red_marrow
    # extensive BME (as on the held-out real subject 1013): four quadrants, 32-60 mL in all
    ext = vp.study_spec(by_name["sij-15T-siemens-scor-extensive"], 1)
    assert len(ext.lesions) == 4 and 32.0 <= sum(ls.volume_ml for ls in ext.lesions) <= 60.0
    # every SIJ lesion core draws its edema fraction (calibrated to the readers' BME contrast)
    efs = [ls.edema_fraction for half in ("tune", "dev") for _, kind, seed in vp.cohort(half, "sij")
           for ls in vp.study_spec(kind, seed).lesions]
    assert all(vp.SIJ_EDEMA[0] <= e <= vp.SIJ_EDEMA[1] for e in efs) and len(set(efs)) > 10


def test_diagnose_splits_errors_by_tissue_and_marrow_mask() -> None:
    from bmeseg.synth.tissues import Tissue

    tissue = np.full((6, 6, 2), int(Tissue.MUSCLE), np.int32)
    tissue[:3] = Tissue.MARROW  # 36 truth marrow voxels
    truth = np.zeros(tissue.shape, np.int32)
    truth[0, :4] = 1  # 8 lesion voxels (in marrow)
    pred = np.zeros(tissue.shape, bool)
    pred[0, :2] = True  # 4 found
    pred[5, 5] = True  # 2 FP voxels in muscle
    marrow = np.zeros(tissue.shape, bool)
    marrow[:3, :3] = True  # 18 voxels of truth marrow
    marrow[4, 0] = True  # + 2 muscle voxels
    d = vp.diagnose(pred, truth, tissue, marrow, 0.5)
    assert d["fp_ml_by_tissue"] == {"muscle": 1.0}
    # the 4 missed voxels: column 2 inside the marrow mask, column 3 outside
    assert d["fn_ml_in_marrow_mask"] == 1.0 and d["fn_ml_outside_marrow_mask"] == 1.0
    assert d["marrow_recall"] == pytest.approx(18 / 36)
    assert d["marrow_precision"] == pytest.approx(18 / 20)
    assert d["marrow_mask_non_marrow_ml"] == {"muscle": 1.0}
    assert "fn_ml_beyond_grow" not in d  # the causes need where lesions may grow and the rule's margin


def test_diagnose_names_why_lesion_voxels_were_missed() -> None:
    from bmeseg.edema import GROW_MARGIN
    from bmeseg.synth.tissues import Tissue

    tissue = np.full((8, 8, 1), int(Tissue.MARROW), np.int32)
    truth = np.zeros(tissue.shape, np.int32)
    truth[2:6, 2:6] = 1  # 16 lesion voxels
    pred = np.zeros(tissue.shape, bool)
    pred[2:6, 2:4] = True  # 8 found
    pred[1, 2] = pred[7, 7] = True  # FP: one on the lesion's rim, one away from it
    grow = np.ones(tissue.shape, bool)
    grow[5, 4:6] = False  # 2 missed voxels lie beyond where a lesion may grow
    score = np.full(tissue.shape, 2.0, np.float32)
    score[2:5, 4] = GROW_MARGIN - 0.1  # 3 missed voxels fail the rule's growth margin
    d = vp.diagnose(pred, truth, tissue, grow, 1.0, grow=grow, score=score)
    assert d["fn_ml_beyond_grow"] == 2.0 and d["fn_ml_fails_rule"] == 3.0
    assert d["fn_ml_passes_not_kept"] == 16 - 8 - 2 - 3
    assert d["fp_ml_on_rim"] == 1.0
    assert any("by cause" in line for line in vp._fmt_diagnostic(d, {}))


def test_placement_counts_found_voxels_by_bone_and_quadrant() -> None:
    from types import SimpleNamespace

    truth = np.zeros((10, 10, 2), np.int32)
    truth[:4] = 1  # LEFT_SACRAL_UPPER, 80 voxels
    truth[6:] = 2  # LEFT_ILIAC_LOWER, 80 voxels
    pred = np.zeros_like(truth, dtype=np.uint8)
    pred[:2] = 1  # half of the sacral lesion, named right
    pred[6:] = 2  # all of the iliac one, right bone, wrong quadrant
    meas = SimpleNamespace(lesion_labels=pred, lesions=[SimpleNamespace(id=1, bone="sacrum", region="left_upper"),
                                                        SimpleNamespace(id=2, bone="ilium_left", region="upper")])
    tj = {"lesions": [{"id": 1, "bone": "sacrum", "location": "LEFT_SACRAL_UPPER"},
                      {"id": 2, "bone": "ilium_left", "location": "LEFT_ILIAC_LOWER"}]}
    got = vp.placement(meas, truth, tj)
    assert got == {"found_vox": 120, "bone_ok_vox": 120, "quadrant_ok_vox": 40}
    # knee lesions have no quadrant: bone only
    tj_knee = {"lesions": [{"id": 1, "bone": "femur", "location": "trochlea"}, {"id": 2, "bone": "tibia"}]}
    assert vp.placement(meas, truth, tj_knee) == {"found_vox": 120, "bone_ok_vox": 0}


def test_run_one_applies_a_config_over_the_preset(tmp_path: Path) -> None:
    root = tmp_path / "s"
    make_study(root, StudySpec.tiny(lesions=(LesionSpec("femur", 3.0, "medial_condyle"),)), seed=3)
    base = vp.run_one(root, "knee")
    cfg = tmp_path / "strict.toml"
    cfg.write_text("[edema]\nstir_min_ratio = 50.0\n")  # nothing is 50x normal marrow on STIR
    strict = vp.run_one(root, "knee", config=str(cfg))
    assert base["pred_ml"] > 0.5 and base["dice"] > 0.3
    assert strict["pred_ml"] == 0.0 and strict["truth_ml"] == base["truth_ml"]


def test_dev_seeds_make_fresh_development_studies_and_never_take_a_scored_half() -> None:
    assert vp._seed_list("5003-5005") == (5003, 5004, 5005)
    assert vp._seed_list("5003,5009") == (5003, 5009)
    ids = [sid for sid, _k, _s in vp.cohort("dev", "knee", (5003,))]
    assert ids and all(sid.startswith("dev-5003-") for sid in ids)
    for bad in ("2003", "1000-1001", "x", "3050,5000"):
        with pytest.raises(argparse.ArgumentTypeError):
            vp._seed_list(bad)
