"""Shared test fixtures: real-data location, SeriesInfo factory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def real_data_dir() -> Path | None:
    """``$BMESEG_REAL_DATA`` or ``../shared/data`` beside the checkout; None when absent."""
    env = os.environ.get("BMESEG_REAL_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture
def real_data() -> Path:
    d = real_data_dir()
    if d is None:
        pytest.skip("real data (../shared/data or $BMESEG_REAL_DATA) not present")
    return d


def make_info(**kw: Any) -> Any:
    """A SeriesInfo with plausible defaults (a sagittal 24-slice series), overridden by ``kw``."""
    from bmeseg.io.dicom import SeriesInfo

    base: dict[str, Any] = dict(
        key="1.2.3", study_instance_uid="study", series_instance_uid="1.2.3", series_number=1,
        series_description="", protocol_name="", sequence_name="", modality="MR", manufacturer="SIEMENS",
        field_strength_t=1.5, scanning_sequence=("SE",), sequence_variant=("SK",), scan_options=(),
        image_type=("ORIGINAL", "PRIMARY", "M", "ND"), repetition_time_ms=None, echo_time_ms=None,
        inversion_time_ms=None, flip_angle_deg=90.0, echo_number=1,
        image_orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0), rows=256, columns=256,
        pixel_spacing_mm=(0.6, 0.6), slice_thickness_mm=3.5, n_slices=24, frame_of_reference_uid="for",
        patient_id="p", study_date="20260101", files=(),
    )
    base.update(kw)
    if "key" not in kw:
        base["key"] = base["series_instance_uid"]
    return SeriesInfo(**base)


def tiny_pair(
    *, seed: int = 0, lesion: bool = True, shape: tuple[int, int, int] = (64, 56, 20),
    spacing: tuple[float, float, float] = (1.0, 1.2, 3.0), flip_i: bool = True,
) -> tuple[Any, Any, Any]:
    """A small seeded T1 + STIR pair on one grid: body of muscle with subcutaneous fat, one bone
    (cortex + fatty marrow), optionally a subchondral-ish lesion. Unequal spacing and a flipped i axis.

    Returns ``(t1, stir, truth)`` Volumes; ``truth`` is the boolean lesion mask.
    """
    import numpy as np

    from bmeseg.volume import Geometry, Volume

    rng = np.random.default_rng(seed)
    direction = np.diag([-1.0 if flip_i else 1.0, 1.0, 1.0])
    g = Geometry(shape, spacing, (30.0, -20.0, -25.0), direction)
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    p = g.index_to_lps(np.stack([ii, jj, kk], -1).astype(float))
    centre = g.index_to_lps(np.array([(n - 1) / 2 for n in shape]))
    d = p - centre
    r_body = np.sqrt((d[..., 0] / 28) ** 2 + (d[..., 1] / 30) ** 2)
    r_bone = np.sqrt((d[..., 0] / 13) ** 2 + (d[..., 1] / 15) ** 2 + (d[..., 2] / 26) ** 2)
    body = r_body < 1.0
    subcut = body & (r_body > 0.82)
    bone = r_bone < 1.0
    marrow = r_bone < 0.85
    # tissue signals (T1, STIR) in arbitrary units
    t1 = np.where(body, 400.0, 0.0)
    stir = np.where(body, 300.0, 0.0)
    t1[subcut], stir[subcut] = 1000.0, 60.0
    t1[bone], stir[bone] = 60.0, 40.0  # cortex: dark on both
    t1[marrow], stir[marrow] = 900.0, 80.0
    truth = np.zeros(shape, bool)
    if lesion:
        c = centre + np.array([4.0, 6.0, 6.0])
        truth = marrow & (np.linalg.norm((p - c) / np.array([5.0, 5.0, 8.0]), axis=-1) < 1.0)
        t1[truth], stir[truth] = 350.0, 330.0
    t1 = np.abs(t1 + rng.normal(0, 25, shape))
    stir = np.abs(stir + rng.normal(0, 12, shape))
    return (Volume(t1.astype(np.float32), g), Volume(stir.astype(np.float32), g), Volume(truth, g))
