"""Marrow and edema on tiny synthetic pairs with known truth."""

from __future__ import annotations

import numpy as np

from bmeseg.config import load_settings
from bmeseg.pipeline import detect

from .conftest import tiny_pair


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def test_lesion_found_and_subcutaneous_fat_is_not_marrow() -> None:
    t1, stir, truth = tiny_pair()
    s = load_settings("generic")
    marrow, edema, meas = detect(t1, stir, s)
    assert _dice(edema.mask, truth.array) > 0.7
    # subcutaneous fat (bright T1, dark STIR, at the body edge) is not marrow
    assert int(marrow.bones.max()) == 1
    assert len(meas.lesions) == 1
    les = meas.lesions[0]
    true_ml = truth.array.sum() * t1.geometry.voxel_volume_ml
    assert abs(les.volume_ml - true_ml) / true_ml < 0.3
    true_c = t1.geometry.index_to_lps(np.argwhere(truth.array).mean(0))
    assert np.linalg.norm(np.asarray(les.centroid_lps_mm) - true_c) < 3.0


def test_no_lesion_no_edema_and_deterministic() -> None:
    t1, stir, _ = tiny_pair(lesion=False, seed=3)
    s = load_settings("generic")
    _, e1, m1 = detect(t1, stir, s)
    _, e2, _ = detect(t1, stir, s)
    assert m1.bme_volume_ml < 0.2
    assert np.array_equal(e1.mask, e2.mask)
