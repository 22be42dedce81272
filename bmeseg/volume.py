"""The one image type that flows through the pipeline.

Conventions (used everywhere in bmeseg)
---------------------------------------
* ``Volume.array`` is indexed ``[i, j, k]``: ``i`` runs along a DICOM image row
  (the first ImageOrientationPatient vector, i.e. the column index), ``j`` down
  the columns (the second vector, i.e. the row index) and ``k`` across slices.
  This is the nibabel / NIfTI axis order, so ``array.shape == (Columns, Rows,
  n_slices)`` for a DICOM series.
* World coordinates are DICOM patient coordinates, **LPS**, in millimetres.
  ``Geometry.affine`` maps voxel indices ``(i, j, k, 1)`` to LPS.
* LPS <-> RAS (for NIfTI files) is converted only in :func:`lps_to_ras_affine`.
* SimpleITK images are ``[k, j, i]`` numpy-wise; :func:`to_sitk` /
  :func:`from_sitk` are the only places that transpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import GeometryError

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk

__all__ = ["Geometry", "Volume", "lps_to_ras_affine", "to_sitk", "from_sitk"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras_affine(affine: ArrayLike) -> NDArray[np.float64]:
    """Convert a 4x4 voxel->LPS affine to voxel->RAS, or back (the map is its own inverse).

    This is the only place bmeseg flips between the DICOM (LPS) and NIfTI (RAS)
    world conventions.

    Examples
    --------
    >>> a = np.eye(4); a[:3, 3] = [10, 20, 30]
    >>> lps_to_ras_affine(a)[:3, 3].tolist()
    [-10.0, -20.0, 30.0]
    """
    return _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Geometry:
    """Where every voxel of a 3-D grid sits in patient space (LPS, mm).

    Parameters
    ----------
    shape : tuple of 3 int
        Grid size along ``(i, j, k)``.
    spacing_mm : tuple of 3 float
        Voxel size along ``(i, j, k)``, millimetres, all > 0.
    origin_lps_mm : tuple of 3 float
        LPS position of the centre of voxel ``(0, 0, 0)``.
    direction : (3, 3) array
        Columns are the unit vectors of the ``i``, ``j`` and ``k`` axes in LPS.
        Must be orthonormal (sheared grids are refused at load time).
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_lps_mm: tuple[float, float, float]
    direction: NDArray[np.float64] = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        d = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        object.__setattr__(self, "direction", d)
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "origin_lps_mm", tuple(float(s) for s in self.origin_lps_mm))
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise GeometryError(f"shape must be 3 positive ints; got {self.shape}")
        if min(self.spacing_mm) <= 0 or not np.all(np.isfinite(self.spacing_mm)):
            raise GeometryError(f"spacing must be positive and finite; got {self.spacing_mm}")
        if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
            raise GeometryError(f"direction cosines are not orthonormal:\n{d}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Geometry):
            return NotImplemented
        return (
            self.shape == other.shape
            and self.spacing_mm == other.spacing_mm
            and self.origin_lps_mm == other.origin_lps_mm
            and bool(np.array_equal(self.direction, other.direction))
        )

    def __hash__(self) -> int:
        return hash((self.shape, self.spacing_mm, self.origin_lps_mm, self.direction.tobytes()))

    def same_grid(self, other: Geometry, *, tol_mm: float = 1e-3) -> bool:
        """True when both grids put every voxel within ``tol_mm`` of each other."""
        if self.shape != other.shape:
            return False
        corners = np.array([[i, j, k] for i in (0, self.shape[0] - 1)
                            for j in (0, self.shape[1] - 1) for k in (0, self.shape[2] - 1)], dtype=float)
        return bool(np.max(np.abs(self.index_to_lps(corners) - other.index_to_lps(corners))) <= tol_mm)

    @classmethod
    def from_affine(cls, affine: ArrayLike, shape: tuple[int, ...]) -> Geometry:
        """Build from a 4x4 voxel->LPS affine (spacing = column norms)."""
        a = np.asarray(affine, dtype=np.float64)
        m = a[:3, :3]
        spacing = np.linalg.norm(m, axis=0)
        if np.any(spacing <= 0):
            raise GeometryError("affine has a zero-length axis")
        direction = m / spacing
        return cls(
            shape=(int(shape[0]), int(shape[1]), int(shape[2])),
            spacing_mm=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
            origin_lps_mm=(float(a[0, 3]), float(a[1, 3]), float(a[2, 3])),
            direction=direction,
        )

    @property
    def affine(self) -> NDArray[np.float64]:
        """4x4 voxel index ``(i, j, k)`` -> LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing_mm)[None, :]
        a[:3, 3] = self.origin_lps_mm
        return a

    @property
    def affine_ras(self) -> NDArray[np.float64]:
        """4x4 voxel index -> RAS mm (for NIfTI)."""
        return lps_to_ras_affine(self.affine)

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def slice_normal(self) -> NDArray[np.float64]:
        """Unit LPS vector of the ``k`` axis."""
        return np.asarray(self.direction[:, 2])

    def index_to_lps(self, ijk: ArrayLike) -> NDArray[np.float64]:
        """Map ``(..., 3)`` voxel indices (float allowed) to LPS mm."""
        p = np.asarray(ijk, dtype=np.float64)
        a = self.affine
        return p @ a[:3, :3].T + a[:3, 3]

    def lps_to_index(self, lps: ArrayLike) -> NDArray[np.float64]:
        """Map ``(..., 3)`` LPS points (mm) to continuous voxel indices."""
        p = np.asarray(lps, dtype=np.float64)
        a = self.affine
        return (p - a[:3, 3]) @ np.linalg.inv(a[:3, :3]).T

    def axis_codes(self) -> str:
        """Three letters naming the patient direction each array axis points to, e.g. ``'LPS'``."""
        letters = (("L", "R"), ("P", "A"), ("S", "I"))
        out = []
        for col in range(3):
            v = self.direction[:, col]
            ax = int(np.argmax(np.abs(v)))
            out.append(letters[ax][0] if v[ax] > 0 else letters[ax][1])
        return "".join(out)

    def plane(self) -> str:
        """Acquisition plane from the slice normal: ``'axial'``, ``'coronal'`` or ``'sagittal'``."""
        ax = int(np.argmax(np.abs(self.slice_normal)))
        return ("sagittal", "coronal", "axial")[ax]


@dataclass(frozen=True)
class Volume:
    """A 3-D image: ``array[i, j, k]`` plus its :class:`Geometry`.

    ``meta`` holds free-form provenance (series UID, description, path...); it is
    never used for geometry.
    """

    array: NDArray[Any]
    geometry: Geometry
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise GeometryError(f"Volume array must be 3-D; got shape {self.array.shape}")
        if tuple(self.array.shape) != self.geometry.shape:
            raise GeometryError(
                f"array shape {self.array.shape} does not match geometry shape {self.geometry.shape}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.geometry.shape

    @property
    def affine(self) -> NDArray[np.float64]:
        return self.geometry.affine

    def with_array(self, array: NDArray[Any], **meta: Any) -> Volume:
        """Same grid, new voxels (and optionally updated meta)."""
        return Volume(np.asarray(array), self.geometry, {**self.meta, **meta})

    def replace_meta(self, **meta: Any) -> Volume:
        return replace(self, meta={**self.meta, **meta})


def to_sitk(vol: Volume) -> sitk.Image:
    """Volume -> SimpleITK image with the same world geometry (SimpleITK is LPS too)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(vol.array, (2, 1, 0))))
    g = vol.geometry
    img.SetSpacing(g.spacing_mm)
    img.SetOrigin(g.origin_lps_mm)
    img.SetDirection(tuple(float(x) for x in g.direction.ravel()))
    return img


def from_sitk(img: sitk.Image, meta: dict[str, Any] | None = None) -> Volume:
    """SimpleITK image -> Volume."""
    import SimpleITK as sitk

    arr = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0))
    geom = Geometry(
        shape=tuple(int(s) for s in img.GetSize()),  # type: ignore[arg-type]
        spacing_mm=tuple(img.GetSpacing()),  # type: ignore[arg-type]
        origin_lps_mm=tuple(img.GetOrigin()),  # type: ignore[arg-type]
        direction=np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3),
    )
    return Volume(np.ascontiguousarray(arr), geom, dict(meta or {}))
