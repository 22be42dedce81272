"""A tiny seeded synthetic study, for the QA notebooks and examples when no sample data is at hand.

Not a phantom for validating detection (see :mod:`bmeseg.synth` for that): one bone with fatty
marrow in a limb of muscle and subcutaneous fat, optionally a marrow lesion that is dark on T1
and bright on STIR; coronal slices with unequal spacing and a flipped first axis.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..volume import Geometry, Volume

__all__ = ["demo_pair", "write_demo_study"]


def demo_pair(
    *,
    seed: int = 0,
    lesion_mm: float = 6.0,
    shape: tuple[int, int, int] = (72, 64, 16),
    spacing_mm: tuple[float, float, float] = (0.9, 0.9, 3.0),
    t1_shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> tuple[Volume, Volume]:
    """A small T1 + STIR pair, ``(t1, stir)``, on one coronal grid.

    Parameters
    ----------
    seed : int
        Seeds the noise and the lesion's position.
    lesion_mm : float
        Lesion radius in mm (0: no lesion).
    shape, spacing_mm : tuple of 3
        Grid size and voxel size along ``(i, j, k)``; ``i`` runs to the patient's right, ``j``
        to inferior, ``k`` (slices) to posterior.
    t1_shift_mm : tuple of 3
        Moves the T1 anatomy (LPS mm) to mimic patient motion between the series.
    """
    rng = np.random.default_rng(seed)
    direction = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    g = Geometry(shape, spacing_mm, (30.0, -20.0, 25.0), direction)
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    p = g.index_to_lps(np.stack([ii, jj, kk], -1).astype(float))
    centre = g.index_to_lps(np.array([(n - 1) / 2 for n in shape]))
    offset = rng.uniform(-3.0, 3.0, 3) * np.array([1.0, 0.3, 1.0])
    lesion_c = centre + np.array([6.0, 3.0, -10.0]) + offset

    def draw(shift: np.ndarray, fat_sat: bool) -> np.ndarray:
        d = p - centre - shift
        r_body = np.sqrt((d[..., 0] / 30) ** 2 + (d[..., 1] / 26) ** 2)
        r_bone = np.sqrt((d[..., 0] / 14) ** 2 + (d[..., 1] / 12) ** 2 + (d[..., 2] / 28) ** 2)
        body, subcut = r_body < 1.0, (r_body < 1.0) & (r_body > 0.82)
        bone, marrow = r_bone < 1.0, r_bone < 0.84
        sig = np.where(body, 300.0 if fat_sat else 400.0, 0.0)
        sig[subcut] = 60.0 if fat_sat else 1000.0
        sig[bone] = 40.0 if fat_sat else 60.0
        sig[marrow] = 80.0 if fat_sat else 900.0
        if lesion_mm > 0:
            les = marrow & (np.linalg.norm((p - lesion_c - shift) / np.array([1.0, 1.0, 1.6]), axis=-1) < lesion_mm)
            sig[les] = 330.0 if fat_sat else 350.0
        return np.abs(sig + rng.normal(0, 12.0 if fat_sat else 25.0, shape)).astype(np.float32)

    t1 = Volume(draw(np.asarray(t1_shift_mm, float), False), g, {"description": "demo T1"})
    stir = Volume(draw(np.zeros(3), True), g, {"description": "demo STIR"})
    return t1, stir


def write_demo_study(folder: str | os.PathLike[str], **kw: object) -> tuple[Path, Path]:
    """Write :func:`demo_pair` as ``folder/t1.nii.gz`` and ``folder/stir.nii.gz``; returns both paths."""
    from ..io.nifti import write_nifti

    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    t1, stir = demo_pair(**kw)  # type: ignore[arg-type]
    return write_nifti(t1, d / "t1.nii.gz"), write_nifti(stir, d / "stir.nii.gz")
