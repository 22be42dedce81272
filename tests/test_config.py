"""Presets load and validate; out-of-range settings are refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from bmeseg.config import load_settings
from bmeseg.errors import ConfigError

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "pipelines").glob("*.toml"))


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads(name: str) -> None:
    s = load_settings(name)
    assert s.to_dict()["marrow"]["ray_mm"] > 0


@pytest.mark.parametrize(("section", "key", "value"), [
    ("marrow", "ray_enclosed", 1.5),
    ("marrow", "ray_solidity", -0.1),
    ("marrow", "ray_mm", 0.0),
    ("marrow", "hull_mm", -1.0),
    ("edema", "pv_fraction", 1.0),
    ("edema", "pv_core", "max"),
    ("edema", "stir_muscle_ratio", -1.0),
    ("marrow", "fluid_t1_level", 0.0),
    ("marrow", "support_t1_low", 0.9),
    ("marrow", "support_open_mm", -1.0),
    ("marrow", "support_min_cm2", -1.0),
    ("marrow", "support_close_mm", -2.0),
    ("marrow", "joint_close_mm", -1.0),
    ("marrow", "split_neck_mm", -1.0),
    ("marrow", "fluid_body_ml", 0.0),
    ("marrow", "fluid_body_margin_mm", -1.0),
    ("marrow", "fluid_body_midline_mm", -1.0),
    ("marrow", "wall_valley_t1_level", -0.5),
    ("marrow", "edge_reach_mm", -1.0),
    ("marrow", "edge_stir_muscle_max", 0.0),
    ("marrow", "edge_vessel_mm", -1.0),
    ("edema", "edge_max_share", 1.5),
    ("marrow", "lesion_reach_mm", -5.0),
    ("marrow", "reach_stir_muscle", -0.1),
    ("marrow", "reach_t1_muscle", -0.1),
    ("marrow", "reach_rays", 1.5),
    ("marrow", "reach_slices", 4),
    ("marrow", "reach_slices_stir_muscle", -1.0),
    ("lesions", "min_marrow_ml", -0.1),
    ("lesions", "stack_edge_max_share", 1.2),
    ("marrow", "fat_shading_degree", 4),
    ("marrow", "fat_shading_level", 1.0),
    ("marrow", "fat_shading_tolerance", -0.1),
    ("edema", "reference_dark_k", -1.0),
    ("marrow", "sacrum_seed_mm", 0.0),
    ("marrow", "ilium_seed_mm", 10.0),  # must exceed sacrum_seed_mm
    ("marrow", "split_joint_sides", 1),
    ("marrow", "bias_field", "n5"),
    ("marrow", "support_joint_walls", "yes"),  # a bool key: true or false only
])
def test_out_of_range_setting_names_its_key(section: str, key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        load_settings("knee", overrides={section: {key: value}})
