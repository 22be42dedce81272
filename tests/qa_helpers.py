"""A small seeded cohort output folder for the QA page tests (test_qa, test_browser)."""

from __future__ import annotations

import json
from pathlib import Path

from bmeseg.io.nifti import write_nifti
from bmeseg.pipeline import StudyInput, run_study

from .conftest import tiny_pair


def make_cohort(out: Path, src: Path) -> Path:
    """Run three tiny studies into ``out`` and dress them up as a batch output.

    * ``lesion_a``: one lesion, registration as computed;
    * ``clean_b``: no lesion (zero BME);
    * ``badreg_c``: one lesion, report edited to a failed registration with a warning;
    * ``broken_d``: only in ``failures.csv`` (no folder);
    * ``cohort.csv`` with an extra column for the three that ran.
    """
    for name, seed, lesion in (("lesion_a", 0, True), ("clean_b", 1, False), ("badreg_c", 2, True)):
        t1, stir, _ = tiny_pair(seed=seed, lesion=lesion)
        t1p = write_nifti(t1, src / name / "t1.nii.gz")
        stp = write_nifti(stir, src / name / "stir.nii.gz")
        run_study(StudyInput(t1=str(t1p), stir=str(stp)), out / name)
    rep_path = out / "badreg_c" / "report.json"
    rep = json.loads(rep_path.read_text())
    rep["registration"]["status"] = "failed"
    rep["registration"]["reasons"] = ["metric did not improve"]
    rep["warnings"] = [*rep["warnings"], "registration failed its checks; T1 placed by scanner geometry only"]
    rep_path.write_text(json.dumps(rep))
    # the columns bmeseg.batch writes (and an extra one)
    (out / "failures.csv").write_text("study_id,stage,error_type,message,source\n"
                                      "broken_d,load,DicomReadError,truncated file IM0001 (2048 of 131072 bytes),/in/d\n")
    (out / "cohort.csv").write_text("study_id,status,site\nlesion_a,ok,Basel\nclean_b,ok,Bern\nbadreg_c,ok,Basel\n"
                                    "broken_d,failed,Bern\n")
    return out
