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
