"""Synthetic MR studies with known bone-marrow-edema truth.

A fine-grid tissue model (:mod:`~bmeseg.synth.knee`, :mod:`~bmeseg.synth.sij`) is turned into MR signal
with textbook equations (:mod:`~bmeseg.synth.tissues`), acquired on realistic
series grids with partial volume, bias field, Rician noise and patient motion
(:mod:`~bmeseg.synth.acquire`), and written as vendor-flavoured DICOM plus
truth maps (:mod:`~bmeseg.synth.study`).

Examples
--------
>>> from bmeseg.synth import StudySpec, make_study
>>> truth = make_study(tmp_path / "study", StudySpec.tiny(), seed=1)  # doctest: +SKIP
>>> truth.lesions[0].volume_ml  # doctest: +SKIP
4.0
"""

from __future__ import annotations

from .acquire import bias_field, plane_geometry, rician_noise, rigid_matrix, sample_labels, sample_signal
from .knee import KNEE_LOCATIONS, build_knee
from .phantom import BONE_NAMES, FineGrid, LesionTruth, Phantom
from .sij import SIJ_BONE_NAMES, SIJ_LOCATIONS, build_sij
from .study import ANATOMIES, LesionSpec, SeriesTruth, StudySpec, StudyTruth, build_phantom, make_study
from .tissues import SequenceParams, Tissue, compartment_signal, spin_echo_signal, stir_signal_signed

__all__ = [
    "ANATOMIES",
    "BONE_NAMES",
    "KNEE_LOCATIONS",
    "FineGrid",
    "LesionSpec",
    "LesionTruth",
    "Phantom",
    "SIJ_BONE_NAMES",
    "SIJ_LOCATIONS",
    "SequenceParams",
    "SeriesTruth",
    "StudySpec",
    "StudyTruth",
    "Tissue",
    "bias_field",
    "build_knee",
    "build_phantom",
    "build_sij",
    "compartment_signal",
    "make_study",
    "plane_geometry",
    "rician_noise",
    "rigid_matrix",
    "sample_labels",
    "sample_signal",
    "spin_echo_signal",
    "stir_signal_signed",
]
