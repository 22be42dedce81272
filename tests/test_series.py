"""Series classification and pairing from headers, across vendor namings."""

from __future__ import annotations

import pytest

from bmeseg.errors import InputError, SeriesNotFoundError
from bmeseg.series import SeriesKind, choose_pair, classify_series, select_series

from .conftest import make_info

COR = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SAG = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
AX = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

T1 = dict(repetition_time_ms=550.0, echo_time_ms=11.0)
STIR_15 = dict(repetition_time_ms=4200.0, echo_time_ms=35.0, inversion_time_ms=150.0, scanning_sequence=("SE", "IR"))
PDFS = dict(repetition_time_ms=3000.0, echo_time_ms=35.0, scan_options=("FS",))
T2FS = dict(repetition_time_ms=3500.0, echo_time_ms=80.0, scan_options=("SAT_GEMS",))


@pytest.mark.parametrize(
    ("desc", "manufacturer", "params", "kind"),
    [
        # Siemens
        ("t1_tse_cor", "SIEMENS", T1, SeriesKind.T1),
        ("tirm_cor", "SIEMENS", STIR_15, SeriesKind.STIR),
        ("pd_tse_fs_sag", "SIEMENS", PDFS, SeriesKind.PDFS),
        # GE
        ("COR T1", "GE MEDICAL SYSTEMS", T1, SeriesKind.T1),
        ("SAG STIR", "GE MEDICAL SYSTEMS", dict(STIR_15, scanning_sequence=("IR",)), SeriesKind.STIR),
        ("Sag T2 FS", "GE MEDICAL SYSTEMS", T2FS, SeriesKind.T2FS),
        # Philips
        ("T1W_TSE", "Philips Medical Systems", dict(T1, scanning_sequence=("SE",)), SeriesKind.T1),
        ("STIR", "Philips Medical Systems", dict(STIR_15, scanning_sequence=("IR",)), SeriesKind.STIR),
        ("T2W_SPAIR", "Philips Medical Systems", dict(repetition_time_ms=3000.0, echo_time_ms=70.0), SeriesKind.T2FS),
        # uninformative names: the physics decides
        ("Series 4", "SIEMENS", STIR_15, SeriesKind.STIR),
        ("Series 2", "SIEMENS", T1, SeriesKind.T1),
        # 3 T STIR with a longer TI
        ("tirm_cor", "SIEMENS", dict(STIR_15, inversion_time_ms=230.0, field_strength_t=3.0), SeriesKind.STIR),
    ],
)
def test_vendor_namings(desc: str, manufacturer: str, params: dict, kind: SeriesKind) -> None:
    info = make_info(series_description=desc, manufacturer=manufacturer, **params)
    c = classify_series(info)
    assert c.kind is kind, c.reason


@pytest.mark.parametrize(
    ("desc", "params", "why"),
    [
        ("t2_tirm_tra_dark-fluid", dict(repetition_time_ms=9000.0, echo_time_ms=90.0, inversion_time_ms=2500.0), "FLAIR"),
        ("tirm_tra", dict(repetition_time_ms=9000.0, echo_time_ms=90.0, inversion_time_ms=2500.0), "FLAIR"),
        ("t1_mprage_sag", dict(repetition_time_ms=2300.0, echo_time_ms=3.0, inversion_time_ms=900.0,
                               scanning_sequence=("GR", "IR")), "MPRAGE"),
        ("pd_tse_sag", dict(repetition_time_ms=3000.0, echo_time_ms=35.0), "without fat suppression"),
        ("t2_tse_sag", dict(repetition_time_ms=4000.0, echo_time_ms=90.0), "without fat suppression"),
        ("t1_tse_fs_cor", dict(T1, scan_options=("FS",)), "fat suppression"),
        ("localizer", dict(T1), "localizer"),
        ("t1_tse_cor_MPR", dict(T1, image_type=("DERIVED", "SECONDARY", "MPR")), "derived"),
        ("DIXON_F", dict(repetition_time_ms=3000.0, echo_time_ms=35.0), "Dixon"),
    ],
)
def test_traps_are_not_used(desc: str, params: dict, why: str) -> None:
    c = classify_series(make_info(series_description=desc, **params))
    assert not c.kind.fluid_sensitive and c.kind is not SeriesKind.T1
    assert why.lower() in c.reason.lower()


def test_localizer_by_image_type_and_slice_count() -> None:
    loc = make_info(series_description="AAHScout", image_type=("ORIGINAL", "PRIMARY", "M", "LOCALIZER"), **T1)
    assert classify_series(loc).kind is SeriesKind.LOCALIZER
    few = make_info(series_description="t1 3 slices", n_slices=3, **T1)
    assert classify_series(few).kind is SeriesKind.LOCALIZER


def test_stir_ti_outside_fat_null_is_refused_with_reason() -> None:
    c = classify_series(make_info(series_description="Series 9", **dict(STIR_15, inversion_time_ms=400.0)))
    assert c.kind is SeriesKind.OTHER and "fat-null" in c.reason


def _study() -> list:
    return [
        make_info(series_instance_uid="1", series_number=1, series_description="localizer",
                  image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), n_slices=3, **T1),
        make_info(series_instance_uid="2", series_number=2, series_description="t1_tse_cor", image_orientation=COR, **T1),
        make_info(series_instance_uid="3", series_number=3, series_description="pd_tse_fs_cor", image_orientation=COR, **PDFS),
        make_info(series_instance_uid="4", series_number=4, series_description="tirm_sag", image_orientation=SAG, **STIR_15),
        make_info(series_instance_uid="5", series_number=5, series_description="tirm_cor", image_orientation=COR, **STIR_15),
    ]


def test_pair_prefers_stir_in_the_t1_plane() -> None:
    pair = choose_pair(_study())
    assert pair.t1.series_number == 2
    assert pair.fluid.series_number == 5  # STIR over PD FS, coronal like the T1
    assert pair.fluid_class.kind is SeriesKind.STIR


def test_pair_takes_fat_sat_pd_when_no_stir() -> None:
    series = [s for s in _study() if s.series_number in (1, 2, 3)]
    assert choose_pair(series).fluid.series_number == 3


def test_overrides_by_number_uid_and_description() -> None:
    s = _study()
    assert choose_pair(s, fluid="4").fluid.series_number == 4
    assert choose_pair(s, fluid="3").fluid.series_number == 3
    assert choose_pair(s, fluid="tirm_sag").fluid.series_number == 4
    assert select_series(s, "5").series_instance_uid == "5"
    with pytest.raises(InputError, match="matches several"):
        select_series(s, "tirm")
    with pytest.raises(InputError, match="no series matches"):
        select_series(s, "dixon")


def test_no_pair_lists_every_series_with_reason() -> None:
    series = [make_info(series_instance_uid="9", series_number=9, series_description="T1 SE", **T1),
              make_info(series_instance_uid="8", series_number=8, series_description="t2_tse",
                        repetition_time_ms=4000.0, echo_time_ms=90.0)]
    with pytest.raises(SeriesNotFoundError) as err:
        choose_pair(series, source="study-x")
    msg = str(err.value)
    assert "study-x" in msg and "no fat-suppressed fluid-sensitive" in msg
    assert '#9 "T1 SE"' in msg and "-> t1" in msg
    assert '#8 "t2_tse"' in msg and "without fat suppression" in msg
    assert err.value.exit_code == 3
