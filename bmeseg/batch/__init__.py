"""Cohort batch processing: many studies, one process pool or a Dask cluster, one cohort table.

:func:`run_batch` is what ``bmeseg batch`` calls. Studies are found by
:func:`discover_studies` (DICOM by StudyInstanceUID anywhere in the tree, NIfTI
pairs by name), each is processed by :func:`~bmeseg.batch.worker.process_study`
into ``OUT/<study id>/`` (written beside and renamed when complete), and the
results are gathered into ``OUT/cohort.csv``, ``OUT/failures.csv`` and
``OUT/provenance.json``.
"""

from __future__ import annotations

from .core import COHORT_COLUMNS, FAILURE_COLUMNS, BatchResult, cohort_row, input_hash, run_batch
from .discover import Discovery, StudyTask, discover_studies, sanitize_id
from .worker import StudyOutcome, process_study

__all__ = [
    "run_batch",
    "BatchResult",
    "discover_studies",
    "Discovery",
    "StudyTask",
    "process_study",
    "StudyOutcome",
    "input_hash",
    "cohort_row",
    "sanitize_id",
    "COHORT_COLUMNS",
    "FAILURE_COLUMNS",
]
