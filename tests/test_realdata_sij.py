"""The pipeline on a real SIJ T1 + STIR NIfTI pair (skipped without ../shared/data)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bmeseg.cli import main
from bmeseg.pipeline import OUTPUT_FILES

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_sij_pair_produces_contract_outputs(real_data: Path, tmp_path: Path) -> None:
    subj = real_data / "sij_bone_mri" / "1013"
    if not subj.is_dir():
        pytest.skip("sij_bone_mri/1013 not present")
    out = tmp_path / "out"
    code = main(["run", "--t1", str(subj / "t1.nii.gz"), "--stir", str(subj / "stir.nii.gz"),
                 "-o", str(out), "--pipeline", "sij"])
    assert code == 0
    for name in OUTPUT_FILES:
        if name != "bme_seg.dcm":  # a SEG needs a DICOM source; NIfTI input skips it with a warning
            assert (out / name).is_file(), name
    rep = json.loads((out / "report.json").read_text())
    assert rep["scoring_scheme"] == "sparcc"
    assert rep["registration"]["status"] in ("ok", "suspicious", "failed")
    src = nib.load(str(subj / "stir.nii.gz"))
    mask = nib.load(str(out / "bme_mask.nii.gz"))
    # on the STIR's grid, voxel for voxel
    assert mask.shape == src.shape[:3]
    assert np.allclose(mask.affine, src.affine, atol=1e-3)
    lab = np.asarray(mask.dataobj)
    assert lab.dtype == np.uint8
    assert int(lab.max()) == len(rep["lesions"])
