"""How a slice of an ``array[i, j, k]`` volume is put on screen, derived from the geometry only.

Radiological convention: axial and coronal slices show the patient's right on the viewer's
left; axial slices have anterior at the top, coronal and sagittal slices superior at the top,
and sagittal slices anterior on the viewer's left. Which array axis goes where, and whether
it is flipped, is read from :attr:`Geometry.direction`; nothing assumes an axis order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..volume import Geometry

__all__ = ["SliceView", "slice_view", "direction_letter"]

_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))

#: plane -> (LPS direction of screen +x, LPS direction of screen +y, i.e. downwards)
_SCREEN: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),  # right on the left, anterior up
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),  # right on the left, superior up
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),  # anterior on the left, superior up
}


def direction_letter(v: ArrayLike) -> str:
    """The patient direction (one of ``L R P A S I``) an LPS vector points to most."""
    w = np.asarray(v, dtype=float)
    ax = int(np.argmax(np.abs(w)))
    return _LETTERS[ax][0] if w[ax] > 0 else _LETTERS[ax][1]


@dataclass(frozen=True)
class SliceView:
    """A recipe that turns ``array[..]`` slices along ``axis`` into screen images.

    Attributes
    ----------
    axis : int
        Array axis that is sliced (2 = the acquisition slices).
    plane : str
        ``'axial'``, ``'coronal'`` or ``'sagittal'`` (from the slicing axis' direction).
    row_axis, col_axis : int
        Array axes shown down the rows and across the columns of the screen image.
    flip_rows, flip_cols : bool
        Whether those axes run backwards on screen.
    shape : tuple of 2 int
        Screen image size ``(rows, columns)``.
    spacing_mm : tuple of 2 float
        Pixel size ``(height, width)`` in millimetres.
    labels : dict
        Patient direction at each screen edge: keys ``left``, ``right``, ``top``, ``bottom``.
    """

    axis: int
    plane: str
    row_axis: int
    col_axis: int
    flip_rows: bool
    flip_cols: bool
    shape: tuple[int, int]
    spacing_mm: tuple[float, float]
    labels: dict[str, str]

    @property
    def extent_mm(self) -> tuple[float, float, float, float]:
        """``(left, right, bottom, top)`` for ``imshow(..., extent=...)`` with the origin at the top."""
        h, w = self.shape[0] * self.spacing_mm[0], self.shape[1] * self.spacing_mm[1]
        return (0.0, w, h, 0.0)

    def image(self, array: NDArray[Any], index: int) -> NDArray[Any]:
        """Slice ``index`` of a 3-D ``array`` as a 2-D screen image (rows top to bottom)."""
        s = np.take(array, int(index), axis=self.axis)
        if self.row_axis > self.col_axis:
            s = s.T
        if self.flip_rows:
            s = s[::-1, :]
        if self.flip_cols:
            s = s[:, ::-1]
        return np.ascontiguousarray(s)

    def to_screen_mm(self, ijk: ArrayLike) -> NDArray[np.float64]:
        """Map ``(..., 3)`` voxel indices to screen ``(..., 2)`` positions ``(x_mm, y_mm)``."""
        p = np.asarray(ijk, dtype=float)
        r, c = p[..., self.row_axis], p[..., self.col_axis]
        if self.flip_rows:
            r = self.shape[0] - 1 - r
        if self.flip_cols:
            c = self.shape[1] - 1 - c
        return np.stack([(c + 0.5) * self.spacing_mm[1], (r + 0.5) * self.spacing_mm[0]], axis=-1)


def slice_view(geometry: Geometry, axis: int = 2) -> SliceView:
    """Work out how slices along array ``axis`` are shown in radiological convention.

    Parameters
    ----------
    geometry : Geometry
        The grid of the volume (only ``direction``, ``shape`` and ``spacing_mm`` are used).
    axis : {0, 1, 2}
        Array axis to slice along; 2 (the default) gives the acquired slices.

    Examples
    --------
    >>> import numpy as np
    >>> from bmeseg.volume import Geometry
    >>> g = Geometry((4, 5, 3), (1.0, 1.0, 3.0), (0, 0, 0), np.eye(3))  # axial, i -> L, j -> P
    >>> v = slice_view(g)
    >>> v.plane, v.labels["left"], v.labels["top"], v.shape
    ('axial', 'R', 'A', (5, 4))
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"'axis' must be one of {{0, 1, 2}}; got {axis!r}")
    d = geometry.direction
    plane = ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(d[:, axis])))]
    hx, vy = (np.asarray(v) for v in _SCREEN[plane])
    a, b = (x for x in range(3) if x != axis)
    da, db = d[:, a], d[:, b]
    if abs(da @ hx) + abs(db @ vy) >= abs(db @ hx) + abs(da @ vy):
        col_axis, row_axis = a, b
    else:
        col_axis, row_axis = b, a
    flip_cols = bool(d[:, col_axis] @ hx < 0)
    flip_rows = bool(d[:, row_axis] @ vy < 0)
    right = d[:, col_axis] * (-1.0 if flip_cols else 1.0)
    down = d[:, row_axis] * (-1.0 if flip_rows else 1.0)
    labels = {
        "left": direction_letter(-right), "right": direction_letter(right),
        "top": direction_letter(-down), "bottom": direction_letter(down),
    }
    sp = geometry.spacing_mm
    return SliceView(
        axis=axis, plane=plane, row_axis=row_axis, col_axis=col_axis, flip_rows=flip_rows,
        flip_cols=flip_cols, shape=(geometry.shape[row_axis], geometry.shape[col_axis]),
        spacing_mm=(sp[row_axis], sp[col_axis]), labels=labels,
    )
