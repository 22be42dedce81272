"""NIfTI reading and writing. RAS (NIfTI) <-> LPS (bmeseg) goes through
:func:`bmeseg.volume.lps_to_ras_affine` only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from ..volume import Geometry, Volume, lps_to_ras_affine
from .atomic import atomic_path

__all__ = ["read_nifti", "write_nifti"]


def read_nifti(path: str | os.PathLike[str], *, dtype: Any = np.float32) -> Volume:
    """Read a 3-D NIfTI file as a :class:`Volume` (LPS geometry, ``array[i, j, k]``).

    A 4-D file with a single volume is squeezed; more volumes are refused.
    Scaling (``scl_slope``/``scl_inter``) is applied by nibabel.
    """
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such NIfTI file")
    try:
        img: Any = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for bad files
        raise InputError(f"{p}: cannot read as NIfTI ({exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{p}: expected a 3-D image; got shape {data.shape}")
    affine_ras = img.affine
    if affine_ras is None:
        raise InputError(f"{p}: has no affine")
    geom = _geometry_from_affine(np.asarray(affine_ras), data.shape, p)
    return Volume(np.ascontiguousarray(data, dtype=dtype), geom, {"path": str(p)})


def _geometry_from_affine(affine_ras: NDArray[np.float64], shape: tuple[int, ...], p: Path) -> Geometry:
    a = lps_to_ras_affine(affine_ras)
    m = a[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    d = m / spacing
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-3):
        raise InputError(f"{p}: affine is sheared; bmeseg needs an orthogonal voxel grid")
    # re-orthonormalise tiny float noise (nibabel stores float32 affines)
    u, _, vt = np.linalg.svd(d)
    a[:3, :3] = (u @ vt) * spacing
    return Geometry.from_affine(a, shape)


def write_nifti(vol: Volume, path: str | os.PathLike[str], *, dtype: Any = None) -> Path:
    """Write ``vol`` to ``path`` (``.nii`` or ``.nii.gz``) atomically.

    The qform and sform both carry the affine (code 1, scanner); the file is
    written under a temporary name and renamed, so a reader never sees half a file.
    """
    import nibabel as nib

    arr = vol.array if dtype is None else vol.array.astype(dtype, copy=False)
    img = nib.Nifti1Image(arr, vol.geometry.affine_ras)
    img.set_qform(vol.geometry.affine_ras, code=1)
    img.set_sform(vol.geometry.affine_ras, code=1)
    img.header.set_xyzt_units("mm", "sec")
    out = Path(path)
    suffix = ".nii.gz" if out.name.endswith(".nii.gz") else ".nii"
    with atomic_path(out, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
    return out
