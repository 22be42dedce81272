"""Visual QA: per-study pictures, study and cohort HTML pages.

Public API (used by ``bmeseg run``, ``bmeseg report`` and the notebooks):

* :func:`overlay`, :func:`montage`, :func:`registration_check`, :func:`thumbnail` - figures
  (``matplotlib.figure.Figure``; no pyplot state), slices in radiological convention;
* :func:`write_study_qa` - ``qa.png``, ``registration.png``, ``qa_thumb.png`` for one study;
* :func:`write_cohort_page` - ``OUT/index.html`` plus ``OUT/<study>/index.html`` for every study
  folder holding a ``report.json`` (call it at the end of a batch);
* :func:`load_cohort` - the cohort as a list of row dicts, with outlier flags;
* :mod:`bmeseg.qa.demo` - a tiny synthetic study for examples when no sample data is at hand.

Pictures need the optional extra ``qa`` (matplotlib); the HTML pages need only the standard library.
"""

from __future__ import annotations

from . import demo
from ._view import SliceView, slice_view
from .figures import (
    LESION_COLOURS,
    figure_png,
    lesion_colour,
    montage,
    overlay,
    registration_check,
    select_slices,
    thumbnail,
)
from .html import flag_outliers, load_cohort, write_cohort_page, write_study_page
from .study import QA_FILES, write_study_qa, write_study_qa_from_outputs

__all__ = [
    "overlay",
    "montage",
    "registration_check",
    "thumbnail",
    "figure_png",
    "select_slices",
    "slice_view",
    "SliceView",
    "lesion_colour",
    "LESION_COLOURS",
    "QA_FILES",
    "write_study_qa",
    "write_study_qa_from_outputs",
    "write_study_page",
    "write_cohort_page",
    "load_cohort",
    "flag_outliers",
    "demo",
]
