"""bmeseg: find bone marrow edema (BME) on MRI from a T1 and a fat-suppressed fluid-sensitive series.

The public names are imported lazily, so ``import bmeseg`` (and ``bmeseg --help``)
does not pay for SimpleITK, scikit-image or pydicom until they are used.

>>> import bmeseg
>>> sorted(bmeseg.__all__)[:3]
['Geometry', 'StudyInput', 'Volume']
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "Volume": "volume",
    "Geometry": "volume",
    "read_nifti": "io.nifti",
    "write_nifti": "io.nifti",
    "index_dicom": "io.dicom",
    "load_series": "io.dicom",
    "classify_series": "series",
    "choose_pair": "series",
    "register_rigid": "register",
    "resample_to": "register",
    "load_settings": "config",
    "StudyInput": "pipeline",
    "run_study": "pipeline",
    "detect": "pipeline",
}

__all__ = [
    "Geometry",
    "StudyInput",
    "Volume",
    "choose_pair",
    "classify_series",
    "detect",
    "index_dicom",
    "load_series",
    "load_settings",
    "read_nifti",
    "register_rigid",
    "resample_to",
    "run_study",
    "write_nifti",
]
assert sorted(__all__) == sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        module = importlib.import_module(f".{_PUBLIC[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'bmeseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


if TYPE_CHECKING:  # pragma: no cover
    from .config import load_settings
    from .io.dicom import index_dicom, load_series
    from .io.nifti import read_nifti, write_nifti
    from .pipeline import StudyInput, detect, run_study
    from .register import register_rigid, resample_to
    from .series import choose_pair, classify_series
    from .volume import Geometry, Volume
