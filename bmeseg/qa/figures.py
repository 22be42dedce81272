"""QA figures: slices with lesion and marrow outlines, a montage per study, a registration check.

Every function returns a :class:`matplotlib.figure.Figure` (or draws on an Axes you pass); none
touches pyplot's global state, so they are safe in library code, in batch workers and headless.
Slices are shown in radiological convention (see :mod:`bmeseg.qa._view`), with the patient
direction written at each edge and a scale bar in millimetres.

matplotlib is the optional extra ``qa``: ``pip install 'bmeseg[qa]'``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..errors import MissingDependencyError
from ..volume import Volume
from ._view import SliceView, direction_letter, slice_view

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LESION_COLOURS", "MARROW_COLOUR", "lesion_colour", "overlay", "select_slices", "montage",
           "registration_check", "thumbnail", "figure_png"]

#: Lesion outline colours, cycled by lesion id (id 1 gets the first). Warm and saturated, so that
#: they stand apart from the cyan marrow outline and from grey anatomy.
LESION_COLOURS = ("#ff3b30", "#ffd60a", "#ff9f0a", "#ff2dd4", "#7cfc00", "#bf5af2", "#ff8a80", "#ffffff")
MARROW_COLOUR = "#00c8ff"
#: The edge of the registered T1's reach on the STIR panels (dashed): beyond it BME is not judged.
T1_REACH_COLOUR = "#c8c8c8"
_EDGE_COLOUR = "#ff00ff"
_BG = "#101010"
_FG = "#f0f0f0"
_STATUS_COLOUR = {"ok": "#32d74b", "suspicious": "#ff9f0a", "failed": "#ff453a", "skipped": "#98989d"}


def lesion_colour(lesion_id: int) -> str:
    """Outline colour of lesion ``lesion_id`` (the same in every picture and on the HTML pages)."""
    return LESION_COLOURS[(int(lesion_id) - 1) % len(LESION_COLOURS)]


def _figure(width_in: float, height_in: float, dpi: float = 100.0) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised by the pipeline's fallback test
        raise MissingDependencyError("matplotlib", "qa", "QA pictures") from exc
    return Figure(figsize=(width_in, height_in), dpi=dpi, facecolor=_BG)


def figure_png(fig: Figure, *, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes (for ``IPython.display.Image(data=...)`` or a web page), no pyplot needed."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return buf.getvalue()


def _window(array: NDArray[Any], lo: float = 1.0, hi: float = 99.5) -> tuple[float, float]:
    """Display range from percentiles of the non-zero voxels (sub-sampled: fast on big volumes)."""
    flat = np.asarray(array).ravel()
    step = max(1, flat.size // 200_000)
    v = flat[::step]
    v = v[np.isfinite(v) & (v != 0)]
    if v.size == 0:
        return 0.0, 1.0
    a, b = np.percentile(v, [lo, hi])
    return float(a), float(b) if b > a else float(a) + 1.0


def _nice_length_mm(width_mm: float) -> float:
    target = width_mm / 5.0
    for n in (1, 2, 5, 10, 20, 50, 100, 200):
        if n >= target:
            return float(n)
    return 500.0


def _slice_position(vol: Volume, view: SliceView, index: int) -> str:
    """``'S 12.5 mm'``: where slice ``index`` lies along the patient axis it is normal to."""
    g = vol.geometry
    centre = np.array([(n - 1) / 2.0 for n in g.shape])
    centre[view.axis] = index
    p = g.index_to_lps(centre)
    normal = g.direction[:, view.axis]
    ax = int(np.argmax(np.abs(normal)))
    letter = direction_letter(np.eye(3)[ax] * (1.0 if p[ax] >= 0 else -1.0))
    return f"{letter} {abs(p[ax]):.1f} mm"


def _outline(ax: Axes, mask2d: NDArray[np.bool_], view: SliceView, colour: str, width: float,
             style: str = "solid") -> None:
    if not mask2d.any() or mask2d.all():
        return
    # contour only the mask's bounding box plus one pixel, at the pixel centres matplotlib's
    # contour(..., extent=view.extent_mm, origin="upper") would use for the whole slice: the same lines,
    # without full-slice coordinate grids per outline (they stayed alive with the figure: ~3 MB each)
    ny, nx = mask2d.shape
    x0, x1, y0, y1 = view.extent_mm
    x = x0 + (np.arange(nx) + 0.5) * ((x1 - x0) / nx)
    y = (y0 + (np.arange(ny) + 0.5) * ((y1 - y0) / ny))[::-1]
    rows, cols = np.flatnonzero(mask2d.any(axis=1)), np.flatnonzero(mask2d.any(axis=0))
    r = slice(max(0, rows[0] - 1), min(ny, rows[-1] + 2))
    c = slice(max(0, cols[0] - 1), min(nx, cols[-1] + 2))
    ax.contour(x[c], y[r], mask2d[r, c].astype(np.float32), levels=[0.5], colors=[colour], linewidths=width,
               linestyles=style)


def _text_with_halo(ax: Axes, x: float, y: float, s: str, **kw: Any) -> None:
    from matplotlib import patheffects

    t = ax.text(x, y, s, **kw)
    t.set_path_effects([patheffects.withStroke(linewidth=2.5, foreground="black")])


def overlay(
    ax: Axes,
    image: Volume,
    index: int,
    *,
    axis: int = 2,
    lesion_labels: NDArray[np.integer] | None = None,
    marrow: NDArray[np.integer] | None = None,
    window: tuple[float, float] | None = None,
    show_ids: bool = True,
    annotate: bool = True,
    title: str | None = None,
) -> Axes:
    """Draw slice ``index`` of ``image`` on ``ax`` with lesion and marrow outlines.

    Parameters
    ----------
    ax : matplotlib Axes
        Where to draw (e.g. from ``Figure().subplots()``).
    image : Volume
        The grey-level volume (STIR, or T1 on the STIR grid).
    index : int
        Slice number along ``axis``.
    axis : {0, 1, 2}
        Array axis to slice; 2 gives the acquired slices.
    lesion_labels : (I, J, K) int array, optional
        0 background, 1..N lesion ids (as in ``bme_mask.nii.gz`` and ``report.json``), on
        ``image``'s grid. Each lesion is outlined in :func:`lesion_colour` and, with
        ``show_ids``, labelled with its id.
    marrow : (I, J, K) int array, optional
        Marrow labels (> 0 is marrow), outlined in cyan.
    window : (low, high), optional
        Grey-level display range; by default the 1st-99.5th percentile of the volume.
    annotate : bool
        Write the patient direction at each edge and draw a scale bar.
    title : str, optional
        Axes title.

    Returns
    -------
    Axes
        ``ax``, for chaining.
    """
    view = slice_view(image.geometry, axis)
    lo, hi = window if window is not None else _window(image.array)
    ext = view.extent_mm
    ax.imshow(view.image(image.array, index), cmap="gray", vmin=lo, vmax=hi, extent=ext,
              interpolation="bilinear")
    ax.set_facecolor("black")
    if marrow is not None:
        _outline(ax, view.image(marrow, index) > 0, view, MARROW_COLOUR, 0.7)
    if lesion_labels is not None:
        lab = view.image(lesion_labels, index)
        px_h, px_w = view.spacing_mm
        for lid in (int(v) for v in np.unique(lab) if v > 0):
            m = lab == lid
            _outline(ax, m, view, lesion_colour(lid), 1.6)
            if show_ids:
                rows, cols = np.nonzero(m)
                x = (cols.max() + 1.0) * px_w + 1.0
                y = rows.min() * px_h
                _text_with_halo(ax, x, y, str(lid), color=lesion_colour(lid), fontsize=9,
                                fontweight="bold", ha="left", va="bottom")
    if annotate:
        lab_kw: dict[str, Any] = dict(color="#ffe14d", fontsize=8, fontweight="bold", transform=ax.transAxes)
        _text_with_halo(ax, 0.015, 0.5, view.labels["left"], ha="left", va="center", **lab_kw)
        _text_with_halo(ax, 0.985, 0.5, view.labels["right"], ha="right", va="center", **lab_kw)
        _text_with_halo(ax, 0.5, 0.985, view.labels["top"], ha="center", va="top", **lab_kw)
        _text_with_halo(ax, 0.5, 0.015, view.labels["bottom"], ha="center", va="bottom", **lab_kw)
        width_mm, height_mm = ext[1], ext[2]
        bar = _nice_length_mm(width_mm)
        x1, y = width_mm * 0.96, height_mm * 0.95
        ax.plot([x1 - bar, x1], [y, y], color="white", linewidth=2.0, solid_capstyle="butt")
        _text_with_halo(ax, x1 - bar / 2, y - height_mm * 0.02, f"{bar:g} mm", color="white", fontsize=6.5,
                        ha="center", va="bottom")
    ax.set_xlim(ext[0], ext[1])
    ax.set_ylim(ext[2], ext[3])
    ax.set_axis_off()
    if title:
        ax.set_title(title, color=_FG, fontsize=7.5, pad=2, y=1.0)  # y: no tick layout to place it (axes are off)
    return ax


def select_slices(
    lesion_labels: NDArray[np.integer],
    marrow: NDArray[np.integer] | None = None,
    *,
    axis: int = 2,
    max_slices: int = 8,
    n_without: int = 2,
) -> list[int]:
    """Slices worth showing: every lesion's largest slice, other BME slices, and a few without BME.

    Returns sorted slice indices along ``axis``: at most ``max_slices`` with BME (each lesion's
    largest cross-section first, then evenly spaced others) plus up to ``n_without`` marrow
    slices without BME. With no BME at all, ``max_slices`` marrow slices evenly spaced.

    Examples
    --------
    >>> lab = np.zeros((4, 4, 10), np.uint8); lab[1:3, 1:3, 6:8] = 1
    >>> select_slices(lab, np.ones_like(lab), max_slices=4, n_without=2)
    [0, 6, 7, 9]
    """
    other = tuple(a for a in range(3) if a != axis)
    lab = np.asarray(lesion_labels)
    n = lab.shape[axis]
    bme_area = np.count_nonzero(lab, axis=other)
    has_bme = np.flatnonzero(bme_area)
    if marrow is not None:
        marrow_area = np.count_nonzero(np.asarray(marrow), axis=other)
        candidates = np.flatnonzero(marrow_area)
        if candidates.size == 0:
            candidates = np.arange(n)
    else:
        candidates = np.arange(n)

    def spread(pool: NDArray[np.intp], k: int) -> list[int]:
        if k <= 0 or pool.size == 0:
            return []
        if pool.size <= k:
            return [int(v) for v in pool]
        if k == 1:
            return [int(pool[pool.size // 2])]
        return [int(pool[round(x)]) for x in np.linspace(0, pool.size - 1, k)]

    if has_bme.size == 0:
        return sorted(set(spread(candidates, max_slices)))
    chosen: list[int] = []
    ids = [int(v) for v in np.unique(lab) if v > 0]
    areas = sorted(((int(np.count_nonzero(lab == i, axis=other).max()), i) for i in ids), reverse=True)
    for _, lid in areas:  # each lesion's largest cross-section, biggest lesions first
        k = int(np.argmax(np.count_nonzero(lab == lid, axis=other)))
        if k not in chosen and len(chosen) < max_slices:
            chosen.append(k)
    rest = np.array([k for k in has_bme if k not in chosen], dtype=np.intp)
    chosen += spread(rest, max_slices - len(chosen))
    without = np.array([k for k in candidates if bme_area[k] == 0], dtype=np.intp)
    chosen += spread(without, n_without)
    return sorted(set(chosen))


def _lesion_dicts(lesions: Sequence[Any] | None) -> list[dict[str, Any]]:
    out = []
    for les in lesions or ():
        out.append(dict(les) if isinstance(les, Mapping) else les.to_dict())
    return out


def montage(
    stir: Volume,
    t1: Volume | None,
    lesion_labels: NDArray[np.integer],
    marrow: NDArray[np.integer] | None = None,
    *,
    lesions: Sequence[Any] | None = None,
    axis: int = 2,
    max_slices: int = 8,
    n_without: int = 2,
    title: str | None = None,
) -> Figure:
    """The per-study QA picture: chosen slices, STIR and registered T1 side by side, outlined.

    Parameters
    ----------
    stir : Volume
        Fluid-sensitive volume; its grid is the one every other array is on.
    t1 : Volume or None
        T1 resampled onto ``stir``'s grid (``StudyResult.t1``); None shows STIR only.
    lesion_labels : (I, J, K) int array
        0 background, 1..N lesion ids matching ``report.json``.
    marrow : (I, J, K) int array, optional
        Marrow labels (> 0 is marrow).
    lesions : sequence of dict or Lesion, optional
        The report's lesions (id, bone, region, volume_ml) for the legend under the slices.
    axis, max_slices, n_without
        Which slices: see :func:`select_slices`.
    title : str, optional
        Headline (study name and key numbers).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ..marrow import t1_coverage

    lab = np.asarray(lesion_labels)
    view = slice_view(stir.geometry, axis)
    ks = select_slices(lab, marrow, axis=axis, max_slices=max_slices, n_without=n_without)
    # where the T1 does not reach (a slab in another plane, a shorter one) BME is not judged: outline it
    reach = t1_coverage(np.asarray(t1.array)) if t1 is not None else None
    if reach is not None and reach.all():
        reach = None  # the T1 reaches everywhere: nothing to outline or say
    w_stir = _window(stir.array)
    w_t1 = _window(t1.array) if t1 is not None else (0.0, 1.0)
    per_pair = 2 if t1 is not None else 1
    pairs_per_row = 1 if len(ks) == 1 else 2
    ncols = per_pair * pairs_per_row
    nrows = max(1, math.ceil(len(ks) / pairs_per_row))
    ext = view.extent_mm
    panel_w = 2.7
    panel_h = float(np.clip(panel_w * ext[2] / ext[1], 1.2, 4.5))
    title_h, head_h = 0.28, 0.8
    les = _lesion_dicts(lesions)
    legend_rows = math.ceil(len(les) / 3) if les else 1
    legend_h = 0.12 + 0.2 * min(legend_rows, 6)
    width = panel_w * ncols + 0.1 * (ncols - 1) + 0.1
    height = head_h + nrows * (panel_h + title_h) + legend_h
    fig = _figure(width, height)
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    fig.subplots_adjust(left=0.05 / width, right=1 - 0.05 / width, top=1 - head_h / height,
                        bottom=legend_h / height, wspace=0.1 / panel_w, hspace=title_h / panel_h)
    n_slices = stir.shape[axis]
    for slot, ax in enumerate(axes.ravel()):
        pair, col = divmod(slot, per_pair)
        if pair >= len(ks):
            ax.set_axis_off()
            continue
        k = ks[pair]
        ids = sorted(int(v) for v in np.unique(np.take(lab, k, axis=axis)) if v > 0)
        if col == 0:
            bme = f"BME: lesion {', '.join(map(str, ids))}" if ids else "no BME"
            seen = view.image(reach, k) if reach is not None else None
            if seen is not None and not seen.any():
                bme += " (the T1 does not reach this slice)"
            t = f"STIR  slice {k + 1}/{n_slices}  {_slice_position(stir, view, k)}\n{bme}"
            overlay(ax, stir, k, axis=axis, lesion_labels=lab, marrow=marrow, window=w_stir, title=t)
            if seen is not None:
                _outline(ax, seen, view, T1_REACH_COLOUR, 0.9, "dashed")
        else:
            assert t1 is not None
            overlay(ax, t1, k, axis=axis, lesion_labels=lab, marrow=marrow, window=w_t1,
                    title=f"T1 registered  slice {k + 1}\n ")
    head = title or "bmeseg QA"
    fig.text(0.5, 1 - 0.1 / height, head, color=_FG, fontsize=11, fontweight="bold", ha="center", va="top")
    convention = ("anterior on the viewer's left" if view.plane == "sagittal"
                  else "patient's right on the viewer's left")
    sub = f"{view.plane} slices, radiological view ({convention});  outlines: marrow (cyan), BME lesions (colour = id)"
    if reach is not None:
        sub += ";  dashed grey: the edge of the T1's reach (BME is not judged beyond it)"
    fig.text(0.5, 1 - 0.4 / height, sub, color="#bbbbbb", fontsize=7.5, ha="center", va="top")
    y0 = (legend_h - 0.1) / height
    if not les:
        fig.text(0.5, y0, "no BME lesions found", color=_FG, fontsize=8, ha="center", va="top")
    for n, d in enumerate(les[:18]):
        r, c = divmod(n, 3)
        lid = int(d.get("id", n + 1))
        s = f"{lid}: {d.get('bone', '?')} {d.get('region', '')}  {float(d.get('volume_ml') or 0.0):.2f} mL"
        fig.text(0.02 + c * 0.33, y0 - r * 0.2 / height, s, color=lesion_colour(lid), fontsize=8,
                 fontweight="bold", ha="left", va="top")
    if len(les) > 18:
        fig.text(0.98, 0.01, f"... and {len(les) - 18} more (see report)", color=_FG, fontsize=7, ha="right")
    return fig


def _edges(img: NDArray[Any]) -> NDArray[np.bool_]:
    from skimage.feature import canny

    a = np.asarray(img, dtype=np.float64)
    if not np.isfinite(a).all() or np.ptp(a) == 0:
        return np.zeros(a.shape, bool)
    a = (a - a.min()) / np.ptp(a)
    return np.asarray(canny(a, sigma=1.2, low_threshold=0.75, high_threshold=0.9, use_quantiles=True))


def registration_check(
    stir: Volume,
    t1: Volume,
    *,
    registration: Mapping[str, Any] | None = None,
    lesion_labels: NDArray[np.integer] | None = None,
    marrow: NDArray[np.integer] | None = None,
    axis: int = 2,
    n_slices: int = 3,
    checker_mm: float = 15.0,
) -> Figure:
    """Does the T1 sit on the STIR? T1 edges over STIR (top row) and a STIR/T1 checkerboard (bottom).

    Parameters
    ----------
    stir, t1 : Volume
        The fluid-sensitive volume and T1 resampled onto its grid.
    registration : dict, optional
        ``report.json``'s ``registration`` block; its status colours the headline.
    lesion_labels, marrow : int arrays, optional
        Used only to pick the slices (the largest BME slice first, then spread over the marrow).
    n_slices : int
        Number of slices (columns).
    checker_mm : float
        Checkerboard square size in millimetres.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not stir.geometry.same_grid(t1.geometry, tol_mm=1e-2):
        raise ValueError("'t1' must be on the STIR grid (resample it first)")
    view = slice_view(stir.geometry, axis)
    n = stir.shape[axis]
    other = tuple(a for a in range(3) if a != axis)
    ks: list[int] = []
    if lesion_labels is not None and np.any(lesion_labels):
        ks.append(int(np.argmax(np.count_nonzero(lesion_labels, axis=other))))
    if marrow is not None and np.any(marrow):
        pool = np.flatnonzero(np.count_nonzero(marrow, axis=other))
    else:
        pool = np.arange(n)
    for x in np.linspace(0, pool.size - 1, n_slices + 2)[1:-1]:
        k = int(pool[round(x)])
        if k not in ks and len(ks) < n_slices:
            ks.append(k)
    ks = sorted(ks)
    ext = view.extent_mm
    panel_w = 3.0
    panel_h = float(np.clip(panel_w * ext[2] / ext[1], 1.2, 4.5))
    head_h, title_h = 0.6, 0.25
    width = panel_w * len(ks) + 0.1 * len(ks)
    height = head_h + 2 * (panel_h + title_h)
    fig = _figure(width, height)
    axes = fig.subplots(2, len(ks), squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - head_h / height, bottom=0.01,
                        wspace=0.1 / panel_w, hspace=title_h / panel_h)
    ws, wt = _window(stir.array), _window(t1.array)
    ps = view.spacing_mm
    rr, cc = np.indices(view.shape)
    checker = ((rr * ps[0] // checker_mm).astype(int) + (cc * ps[1] // checker_mm).astype(int)) % 2 == 1
    for c, k in enumerate(ks):
        s = np.clip((view.image(stir.array, k) - ws[0]) / (ws[1] - ws[0]), 0, 1)
        t = np.clip((view.image(t1.array, k) - wt[0]) / (wt[1] - wt[0]), 0, 1)
        rgb = np.repeat(s[..., None], 3, axis=-1)
        e = _edges(t)
        rgb[e] = (1.0, 0.0, 1.0)
        top, bottom = axes[0, c], axes[1, c]
        top.imshow(rgb, extent=ext, interpolation="nearest")
        top.set_title(f"T1 edges (magenta) on STIR, slice {k + 1}", color=_FG, fontsize=7.5, pad=2, y=1.0)
        bottom.imshow(np.where(checker, t, s), cmap="gray", vmin=0, vmax=1, extent=ext, interpolation="bilinear")
        bottom.set_title(f"checkerboard STIR / T1, slice {k + 1}", color=_FG, fontsize=7.5, pad=2, y=1.0)
        for ax in (top, bottom):
            lab_kw: dict[str, Any] = dict(color="#ffe14d", fontsize=8, fontweight="bold", transform=ax.transAxes)
            _text_with_halo(ax, 0.015, 0.5, view.labels["left"], ha="left", va="center", **lab_kw)
            _text_with_halo(ax, 0.985, 0.5, view.labels["right"], ha="right", va="center", **lab_kw)
            _text_with_halo(ax, 0.5, 0.985, view.labels["top"], ha="center", va="top", **lab_kw)
            ax.set_axis_off()
    reg = dict(registration or {})
    status = str(reg.get("status", "unknown"))
    parts = [f"Registration: {status.upper()}"]
    rot, tr = reg.get("rotation_deg"), reg.get("translation_mm")
    if rot is not None and tr is not None:
        parts.append("rotation (" + ", ".join(f"{round(float(v), 1) + 0.0:.1f}" for v in rot) + ") deg, translation ("
                     + ", ".join(f"{round(float(v), 1) + 0.0:.1f}" for v in tr) + ") mm")
    if reg.get("nmi_before") is not None and reg.get("nmi_after") is not None:
        parts.append(f"NMI {float(reg['nmi_before']):.3f} -> {float(reg['nmi_after']):.3f}")
    fig.text(0.5, 1 - 0.08 / height, ";  ".join(parts), color=_STATUS_COLOUR.get(status, _FG), fontsize=10,
             fontweight="bold", ha="center", va="top")
    reasons = "; ".join(str(r) for r in reg.get("reasons", []) or [])
    if reasons:
        fig.text(0.5, 1 - 0.36 / height, reasons[:160], color="#bbbbbb", fontsize=7.5, ha="center", va="top")
    return fig


def thumbnail(
    stir: Volume,
    lesion_labels: NDArray[np.integer],
    marrow: NDArray[np.integer] | None = None,
    *,
    axis: int = 2,
    size_in: float = 2.0,
) -> Figure:
    """One STIR slice (the one with the most BME, else the middle of the marrow), outlined, small."""
    lab = np.asarray(lesion_labels)
    ks = select_slices(lab, marrow, axis=axis, max_slices=1, n_without=0)
    k = ks[len(ks) // 2] if ks else stir.shape[axis] // 2
    view = slice_view(stir.geometry, axis)
    ext = view.extent_mm
    h = float(np.clip(size_in * ext[2] / ext[1], 0.8, 3.0))
    fig = _figure(size_in, h)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    overlay(ax, stir, k, axis=axis, lesion_labels=lab, marrow=marrow, show_ids=True, annotate=False)
    return fig
