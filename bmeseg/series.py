"""Classify MR series from their headers and choose the T1 + fluid-sensitive pair.

The rules follow the header cues in DOMAIN.md ("Telling series apart"):
inversion time first (STIR vs FLAIR vs MPRAGE), then fat-suppression flags and
names, then TR/TE weighting, with the series description as a tie-breaker only
where the physics is silent. Every decision carries a human-readable reason,
because a researcher must be able to see why a series was or was not used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from .errors import InputError, SeriesNotFoundError
from .io.dicom import SeriesInfo

__all__ = [
    "Classification",
    "SeriesKind",
    "SeriesPair",
    "choose_pair",
    "classify_series",
    "describe_candidates",
    "select_series",
]


class SeriesKind(StrEnum):
    """What a series is, as far as BME detection cares."""

    T1 = "t1"
    STIR = "stir"  # short-tau inversion recovery (STIR/TIRM)
    T2FS = "t2fs"  # T2-weighted with spectral fat saturation / water-only Dixon
    PDFS = "pdfs"  # PD / intermediate-weighted with fat saturation
    LOCALIZER = "localizer"
    OTHER = "other"

    @property
    def fluid_sensitive(self) -> bool:
        return self in (SeriesKind.STIR, SeriesKind.T2FS, SeriesKind.PDFS)


@dataclass(frozen=True)
class Classification:
    kind: SeriesKind
    reason: str
    # extra flags that affect preference without changing the kind
    post_contrast: bool = False
    from_name_only: bool = False


# --- name patterns (lower-case, matched against description + protocol + sequence name) ---
_RX = {
    "localizer": re.compile(r"locali[sz]er|scout|survey|\bloc\b|3[- _]?plane|tri[- _]?plane|\bplan\b|aahead"),
    "stir": re.compile(r"stir|tirm|\btir\b|\bir[_ -]?fse\b"),
    "flair": re.compile(r"flair|\bdark[_ -]?fluid"),
    "mprage": re.compile(r"mprage|mp[-_ ]?rage|tfl3d|\bbravo\b|\btfe3d|\bspgr"),
    "fatsat": re.compile(
        r"(^|[^a-z])(fs|fat[_ -]?sat|fatsat|fat[_ -]?sup\w*|spair|spir|chess|sfs|water|dixon[_ -]?w|_w$)([^a-z]|$)"
    ),
    "dixon_nonwater": re.compile(r"dixon[_ -]?(f|fat|in|ip|opp|op)\b|_(fat|in|opp|ip|op)$|in[_ -]?phase|opp[_ -]?phase"),
    "t1": re.compile(r"(^|[^a-z0-9])t1(w|[^a-z0-9]|_|$)|t1[_ -]?(tse|fse|se)|\bt1w"),
    "t2": re.compile(r"(^|[^a-z0-9])t2(w|[^a-z0-9*]|_|$)|\bt2w"),
    "pd": re.compile(r"(^|[^a-z0-9])(pd|pdw|dp|rho|inter(mediate)?)([^a-z0-9]|_|$)"),
    "contrast": re.compile(r"\+c\b|\bpost\b|gad|gd\b|\bce\b|contrast|\+gd"),
    "derived": re.compile(r"\bmpr\b|reformat|\bmip\b|subtract|\bsub\b|\badc\b|\bmap\b"),
}

_FS_SCAN_OPTIONS = {"FS", "SFS", "FSS", "FAT", "FATSAT", "SAT_GEMS", "FSA_GEMS", "FSI_GEMS", "FSS_GEMS", "SPAIR", "SPIR", "WE"}
_DERIVED_TYPES = {"DERIVED", "SECONDARY", "MPR", "PROJECTION IMAGE", "REFORMATTED", "MIP", "SUBTRACTION"}
_DIXON_NONWATER_TYPES = {"FAT", "F", "IN_PHASE", "OPP_PHASE", "OUT_PHASE", "IP", "OP"}
_MIN_SLICES = 5


def _text(info: SeriesInfo) -> str:
    return " ".join((info.series_description, info.protocol_name, info.sequence_name)).lower()


def _fat_null_ti_range(field_t: float | None) -> tuple[float, float]:
    """Inversion times (ms) that null fat: TI ~ T1_fat ln2, scanners a bit shorter.

    1.5 T fat T1 ~260-290 ms -> TI ~ 130-200; 3 T fat T1 ~370 ms -> TI ~ 180-260 (DOMAIN.md).
    Unknown field strength accepts both ranges, 0.2-1.0 T systems use shorter TI (~80-130 ms).
    """
    if field_t is None or field_t <= 0:
        return 70.0, 300.0
    if field_t < 1.0:
        return 60.0, 170.0
    if field_t < 2.0:
        return 100.0, 230.0
    return 140.0, 300.0


def classify_series(info: SeriesInfo) -> Classification:
    """Classify one series from its headers.

    Returns a :class:`Classification` whose ``reason`` says which cues decided.

    Examples
    --------
    A Siemens TIRM with TI 150 ms at 1.5 T is STIR whatever its name:

    >>> from bmeseg.io.dicom import SeriesInfo
    >>> s = SeriesInfo(key="1", study_instance_uid="s", series_instance_uid="1", series_number=4,
    ...     series_description="Series 4", protocol_name="", sequence_name="", modality="MR",
    ...     manufacturer="SIEMENS", field_strength_t=1.5, scanning_sequence=("SE", "IR"),
    ...     sequence_variant=(), scan_options=("IR",), image_type=("ORIGINAL", "PRIMARY"),
    ...     repetition_time_ms=4000.0, echo_time_ms=35.0, inversion_time_ms=150.0, flip_angle_deg=None,
    ...     echo_number=1, image_orientation=(0, 1, 0, 0, 0, -1), rows=256, columns=256,
    ...     pixel_spacing_mm=(0.6, 0.6), slice_thickness_mm=3.5, n_slices=24,
    ...     frame_of_reference_uid="f", patient_id="p", study_date="", files=())
    >>> classify_series(s).kind
    <SeriesKind.STIR: 'stir'>
    """
    text = _text(info)
    itype = {t.upper() for t in info.image_type}
    seq = {s.upper() for s in info.scanning_sequence}
    opts = {o.upper() for o in info.scan_options}
    tr, te, ti = info.repetition_time_ms, info.echo_time_ms, info.inversion_time_ms
    contrast = bool(_RX["contrast"].search(text))

    if info.modality and info.modality.upper() != "MR":
        return Classification(SeriesKind.OTHER, f"modality {info.modality}, not MR")
    if "LOCALIZER" in itype or _RX["localizer"].search(text):
        return Classification(SeriesKind.LOCALIZER, "localizer (ImageType/description)")
    if info.is_mosaic or "MOSAIC" in itype:
        return Classification(SeriesKind.OTHER, "mosaic (EPI/diffusion/fMRI), not a structural series")
    if info.n_slices < _MIN_SLICES:
        return Classification(SeriesKind.LOCALIZER, f"only {info.n_slices} slice(s): localizer or single image")
    derived = itype & _DERIVED_TYPES
    if derived or _RX["derived"].search(text):
        why = ",".join(sorted(derived)) if derived else "description"
        return Classification(SeriesKind.OTHER, f"derived/reformatted image ({why})")
    if itype & _DIXON_NONWATER_TYPES or _RX["dixon_nonwater"].search(text):
        return Classification(SeriesKind.OTHER, "Dixon fat / in-phase / opposed-phase image")

    fs_flag = bool(opts & _FS_SCAN_OPTIONS) or bool(_RX["fatsat"].search(text)) or "W" in itype or "WATER" in itype
    is_ir = "IR" in seq or "IR" in opts or (ti is not None and ti > 0)

    # 1. inversion recovery: TI decides between STIR, FLAIR and MPRAGE-like T1
    if ti is not None and ti > 0:
        lo, hi = _fat_null_ti_range(info.field_strength_t)
        if ti > 1500 or _RX["flair"].search(text):
            return Classification(SeriesKind.OTHER, f"FLAIR (TI {ti:.0f} ms nulls fluid, not fat)")
        if "GR" in seq or _RX["mprage"].search(text) or ti > hi + 200:
            return Classification(SeriesKind.OTHER, f"inversion-prepared T1 (MPRAGE-like, TI {ti:.0f} ms), not STIR")
        if lo <= ti <= hi:
            if tr is not None and tr < 1000:
                return Classification(SeriesKind.OTHER, f"short-TI inversion with short TR {tr:.0f} ms: not a STIR")
            return Classification(SeriesKind.STIR, f"inversion recovery with fat-nulling TI {ti:.0f} ms", contrast)
        return Classification(
            SeriesKind.OTHER,
            f"inversion time {ti:.0f} ms outside the fat-null range {lo:.0f}-{hi:.0f} ms "
            f"for {info.field_strength_t or 'unknown'} T",
        )
    if is_ir and _RX["stir"].search(text) and not _RX["flair"].search(text):
        return Classification(SeriesKind.STIR, "STIR/TIRM by name and IR sequence (no TI in header)", contrast)

    t1_like = tr is not None and te is not None and tr <= 1000 and te <= 30
    fluid_like = tr is not None and te is not None and tr >= 1500 and te >= 20

    # 2. T1-weighted spin/gradient echo
    if t1_like:
        if fs_flag:
            return Classification(SeriesKind.OTHER, "T1-weighted with fat suppression: marrow fat signal is gone")
        return Classification(
            SeriesKind.T1, f"T1-weighted (TR {tr:.0f} ms, TE {te:.0f} ms)", contrast
        )
    # 3. fluid-sensitive with spectral fat saturation
    if fluid_like:
        assert te is not None and tr is not None
        if not fs_flag:
            return Classification(
                SeriesKind.OTHER,
                f"fluid-sensitive (TR {tr:.0f}, TE {te:.0f} ms) without fat suppression: marrow stays bright",
            )
        kind = SeriesKind.PDFS if te < 55 else SeriesKind.T2FS
        return Classification(kind, f"{kind.value[:2].upper()} with fat suppression (TR {tr:.0f}, TE {te:.0f} ms)", contrast)

    # 4. headers silent on timing: fall back on the name
    if tr is None or te is None:
        if _RX["stir"].search(text) and not _RX["flair"].search(text):
            return Classification(SeriesKind.STIR, "STIR/TIRM by name only (no TR/TE/TI)", contrast, True)
        if _RX["t1"].search(text) and not fs_flag:
            return Classification(SeriesKind.T1, "T1 by name only (no TR/TE)", contrast, True)
        if fs_flag and (_RX["t2"].search(text) or _RX["pd"].search(text)):
            kind = SeriesKind.T2FS if _RX["t2"].search(text) else SeriesKind.PDFS
            return Classification(kind, "fat-saturated T2/PD by name only (no TR/TE)", contrast, True)
        return Classification(SeriesKind.OTHER, "no TR/TE/TI in header and an uninformative name")
    return Classification(
        SeriesKind.OTHER, f"weighting not T1 and not fluid-sensitive (TR {tr:.0f} ms, TE {te:.0f} ms)"
    )


@dataclass(frozen=True)
class SeriesPair:
    t1: SeriesInfo
    fluid: SeriesInfo
    t1_class: Classification
    fluid_class: Classification
    notes: tuple[str, ...] = ()


def select_series(series: Sequence[SeriesInfo], selector: str) -> SeriesInfo:
    """Find one series by number, SeriesInstanceUID (or split key), or description.

    Description matches are case-insensitive: an exact match wins, then a unique
    substring match. Raises :class:`InputError` naming the candidates otherwise.
    """
    sel = selector.strip()
    by_uid = [s for s in series if sel in (s.key, s.series_instance_uid)]
    if len(by_uid) == 1:
        return by_uid[0]
    if len(by_uid) > 1:  # a split series: take the first part, others are listed in the message
        raise InputError(
            f"selector {selector!r} matches a series that was split into parts; choose one of: "
            + ", ".join(s.key for s in by_uid)
        )
    if sel.isdigit():
        by_num = [s for s in series if s.series_number == int(sel)]
        if len(by_num) == 1:
            return by_num[0]
        if len(by_num) > 1:
            raise InputError(
                f"series number {sel} is ambiguous: " + "; ".join(s.label for s in by_num)
            )
    low = sel.lower()
    exact = [s for s in series if s.series_description.lower() == low]
    if len(exact) == 1:
        return exact[0]
    sub = exact or [s for s in series if low in s.series_description.lower()]
    if len(sub) == 1:
        return sub[0]
    found = "; ".join(s.label for s in series) or "none"
    if not sub:
        raise InputError(f"no series matches {selector!r}. Series found: {found}")
    raise InputError(f"{selector!r} matches several series: " + "; ".join(s.label for s in sub))


_FLUID_RANK = {SeriesKind.STIR: 0, SeriesKind.T2FS: 1, SeriesKind.PDFS: 2}


def _pair_score(t1: SeriesInfo, tc: Classification, fl: SeriesInfo, fc: Classification) -> tuple[float, ...]:
    """Lower is better: STIR over T2FS over PDFS; same plane; pre-contrast; header evidence; more slices."""
    same_plane = t1.plane == fl.plane
    return (
        float(t1.frame_of_reference_uid != fl.frame_of_reference_uid),
        float(_FLUID_RANK[fc.kind]),
        float(not same_plane),
        float(tc.post_contrast) + float(fc.post_contrast),
        float(tc.from_name_only) + float(fc.from_name_only),
        -float(min(t1.n_slices, fl.n_slices)),
        float(fl.series_number or 0),
        float(t1.series_number or 0),
    )


def describe_candidates(series: Sequence[SeriesInfo], classes: dict[str, Classification] | None = None) -> str:
    """One line per series: label, plane, slices, classification and reason."""
    classes = classes or {s.key: classify_series(s) for s in series}
    lines = []
    for s in sorted(series, key=lambda s: (s.study_instance_uid, s.series_number or 0, s.key)):
        c = classes[s.key]
        lines.append(f"  {s.label}: {s.plane}, {s.n_slices} slices -> {c.kind.value}: {c.reason}")
    return "\n".join(lines) if lines else "  (no image series found)"


def choose_pair(
    series: Sequence[SeriesInfo], *, t1: str | None = None, fluid: str | None = None, source: str = "input"
) -> SeriesPair:
    """Pick the T1 and the fat-suppressed fluid-sensitive series of one study.

    Preference: same frame of reference (same session), STIR/TIRM over fat-sat
    T2 over fat-sat PD, same plane as the T1, pre-contrast, more slices.
    ``t1`` / ``fluid`` override the choice (series number, UID or description).

    Raises
    ------
    SeriesNotFoundError
        No usable pair; the message lists every series with its classification.
    """
    classes = {s.key: classify_series(s) for s in series}
    notes: list[str] = []

    def listing(why: str) -> SeriesNotFoundError:
        return SeriesNotFoundError(
            f"{source}: {why}\nSeries found ({len(series)}):\n{describe_candidates(series, classes)}"
        )

    if t1 is not None:
        t1_cands = [select_series(series, t1)]
        if classes[t1_cands[0].key].kind is not SeriesKind.T1:
            notes.append(f"--t1 {t1!r} chosen by the user although classified {classes[t1_cands[0].key].kind.value}")
    else:
        t1_cands = [s for s in series if classes[s.key].kind is SeriesKind.T1]
    if fluid is not None:
        fl_cands = [select_series(series, fluid)]
        if not classes[fl_cands[0].key].kind.fluid_sensitive:
            notes.append(
                f"--stir {fluid!r} chosen by the user although classified {classes[fl_cands[0].key].kind.value}"
            )
    else:
        fl_cands = [s for s in series if classes[s.key].kind.fluid_sensitive]

    if not t1_cands and not fl_cands:
        raise listing("no T1-weighted and no fat-suppressed fluid-sensitive series")
    if not t1_cands:
        raise listing("no T1-weighted series")
    if not fl_cands:
        raise listing("no fat-suppressed fluid-sensitive series (STIR/TIRM or fat-saturated T2/PD)")

    def fc_of(s: SeriesInfo) -> Classification:
        c = classes[s.key]
        return c if c.kind.fluid_sensitive else Classification(SeriesKind.STIR, "chosen by user")

    pairs = [
        (a, b)
        for a in t1_cands
        for b in fl_cands
        if a.key != b.key and (a.study_instance_uid == b.study_instance_uid or t1 is not None or fluid is not None)
    ]
    if not pairs:
        raise listing("no T1 and fluid-sensitive series belong to the same study")
    best = min(pairs, key=lambda p: _pair_score(p[0], classes[p[0].key], p[1], fc_of(p[1])))
    a, b = best
    if a.frame_of_reference_uid != b.frame_of_reference_uid:
        notes.append("T1 and fluid-sensitive series have different frames of reference: registration starts from their stored geometry only")
    if a.plane != b.plane:
        notes.append(f"T1 is {a.plane} and the fluid-sensitive series {b.plane}: T1 is resampled across planes")
    if len({s.study_instance_uid for s in series}) > 1:
        notes.append("the input holds several studies; the pair comes from study " + b.study_instance_uid)
    return SeriesPair(a, b, classes[a.key], fc_of(b), tuple(notes))
