"""Phantom validation in miniature: the real pipeline on tiny synthetic studies with known truth.

The full cohort is ``benchmarks/validate_phantoms.py``; this checks, in a few seconds, that its
scoring works and that a lesion is found (and nothing is found without one) end to end from DICOM.
"""

from __future__ import annotations

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


def test_tiny_knee_lesion_found(tmp_path: Path) -> None:
    r = _run(tmp_path / "les", StudySpec.tiny(lesions=(LesionSpec("femur", 4.0, "medial_condyle"),)), 1)
    assert r["dice"] > 0.8  # 0.86 when written
    assert abs(r["volume_error_pct"]) < 25.0
    assert all(x["detected"] for x in r["lesions"])


def test_tiny_knee_without_lesion_is_clean(tmp_path: Path) -> None:
    r = _run(tmp_path / "neg", StudySpec.tiny(lesions=(), red_marrow=True, effusion=0.8), 4)
    assert r["pred_ml"] <= 0.2
