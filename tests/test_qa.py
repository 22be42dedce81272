"""Visual QA: orientation on screen from the geometry, slice choice, figures, run's pictures, HTML pages."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bmeseg.cli import main
from bmeseg.io.nifti import write_nifti
from bmeseg.pipeline import StudyInput, run_study
from bmeseg.qa import (
    QA_FILES,
    flag_outliers,
    load_cohort,
    montage,
    registration_check,
    select_slices,
    slice_view,
    thumbnail,
    write_study_qa,
)
from bmeseg.volume import Geometry, Volume

from .conftest import tiny_pair
from .qa_helpers import make_cohort

pytest.importorskip("matplotlib")


def _signed_permutations() -> list[np.ndarray]:
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            d = np.zeros((3, 3))
            for col, (row, s) in enumerate(zip(perm, signs, strict=True)):
                d[row, col] = s
            out.append(d)
    return out


_LETTER_AXIS = {"L": (0, 1.0), "R": (0, -1.0), "P": (1, 1.0), "A": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


@pytest.mark.parametrize("direction", _signed_permutations(), ids=lambda d: "".join(
    Geometry((2, 2, 2), (1, 1, 1), (0, 0, 0), d).axis_codes()))
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_view_puts_the_patient_where_the_labels_say(direction: np.ndarray, axis: int) -> None:
    g = Geometry((5, 6, 7), (0.8, 1.1, 3.0), (10.0, -20.0, 30.0), direction)
    v = slice_view(g, axis)
    # the conventions: right on the viewer's left (axial, coronal), anterior on the left (sagittal),
    # anterior up (axial), superior up (coronal, sagittal)
    expected = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
    assert (v.labels["left"], v.labels["right"], v.labels["top"], v.labels["bottom"]) == expected[v.plane]
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in g.shape], indexing="ij"), -1).astype(float)
    lps = g.index_to_lps(ijk)
    k = g.shape[axis] // 2
    # moving right on screen goes towards labels['right'], moving down towards labels['bottom']
    ax_r, s_r = _LETTER_AXIS[v.labels["right"]]
    ax_b, s_b = _LETTER_AXIS[v.labels["bottom"]]
    img_r = v.image(lps[..., ax_r], k) * s_r
    img_b = v.image(lps[..., ax_b], k) * s_b
    assert img_r.shape == v.shape
    assert np.all(np.diff(img_r, axis=1) > 0) and np.all(np.diff(img_b, axis=0) > 0)
    # pixel size on screen is the voxel size of the axes shown there
    assert np.allclose(np.diff(img_r, axis=1), v.spacing_mm[1]) and np.allclose(np.diff(img_b, axis=0), v.spacing_mm[0])
    # to_screen_mm agrees with image(): the voxel drawn at screen (x, y) is the one it maps there
    vox = np.array([1.0, 2.0, 3.0])
    vox[axis] = k
    x, y = v.to_screen_mm(vox)
    marker = np.zeros(g.shape)
    marker[tuple(int(c) for c in vox)] = 1
    r, c = np.argwhere(v.image(marker, k) == 1)[0]
    assert np.isclose(x, (c + 0.5) * v.spacing_mm[1]) and np.isclose(y, (r + 0.5) * v.spacing_mm[0])


def test_slice_view_oblique_follows_the_dominant_axes() -> None:
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    d = rot @ np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]])  # i -> P, j -> A-ish... k -> R: sagittal, tilted
    g = Geometry((8, 9, 5), (1, 1, 4), (0, 0, 0), d)
    v = slice_view(g)
    assert v.plane == "sagittal"
    assert (v.labels["left"], v.labels["top"]) == ("A", "S")


def test_slice_view_rejects_bad_axis() -> None:
    with pytest.raises(ValueError, match="'axis' must be one of"):
        slice_view(Geometry((2, 2, 2), (1, 1, 1), (0, 0, 0)), 3)


def test_select_slices_shows_every_lesion_and_some_without() -> None:
    lab = np.zeros((6, 6, 30), np.uint8)
    lab[1:3, 1:3, 3:20] = 1  # long lesion: largest cross-section at 10
    lab[1:4, 1:4, 10] = 1
    lab[4:6, 4:6, 25] = 2  # a one-slice lesion far away
    marrow = np.zeros_like(lab)
    marrow[..., 2:28] = 1
    ks = select_slices(lab, marrow, max_slices=4, n_without=2)
    assert 10 in ks and 25 in ks
    with_bme = [k for k in ks if lab[..., k].any()]
    without = [k for k in ks if not lab[..., k].any()]
    assert len(with_bme) == 4 and len(without) == 2
    assert all(marrow[..., k].any() for k in without)
    assert ks == sorted(ks)
    # no BME: slices spread over the marrow
    none = select_slices(np.zeros_like(lab), marrow, max_slices=5)
    assert len(none) == 5 and none[0] == 2 and none[-1] == 27
    # along another axis
    assert select_slices(lab, marrow, axis=0, max_slices=2, n_without=0) == [1, 4]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    d = tmp_path_factory.mktemp("qa_study")
    t1, stir, _ = tiny_pair(seed=3)
    t1p, stp = write_nifti(t1, d / "t1.nii.gz"), write_nifti(stir, d / "stir.nii.gz")
    return run_study(StudyInput(t1=str(t1p), stir=str(stp)), None), d


def _texts(fig: object) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]  # type: ignore[attr-defined]


def test_montage_has_stir_and_t1_side_by_side_with_ids_and_labels(study: tuple) -> None:
    res, _ = study
    lab = res.measurements.lesion_labels
    assert lab.max() >= 1
    fig = montage(res.stir, res.t1, lab, res.marrow.bones, lesions=res.measurements.lesions, title="t")
    visible = [ax for ax in fig.axes if ax.images]
    ks = select_slices(lab, res.marrow.bones)
    assert len(visible) == 2 * len(ks)
    titles = [ax.get_title() for ax in visible]
    assert sum(t.startswith("STIR") for t in titles) == len(ks) and sum(t.startswith("T1") for t in titles) == len(ks)
    texts = _texts(fig)
    for lid in range(1, int(lab.max()) + 1):
        assert str(lid) in texts  # the id next to its outline
        assert any(t.startswith(f"{lid}: ") for t in texts)  # the legend line
    # tiny_pair flips i: the geometry, not the array order, decides that R is on the left
    assert texts.count("R") >= len(visible) and texts.count("L") >= len(visible)
    assert any("mm" in t for t in texts)  # scale bar
    # the lesion outline is drawn in the lesion's colour
    from bmeseg.qa import lesion_colour

    colours = {"#" + "".join(f"{round(float(x) * 255):02x}" for x in c[:3]) for ax in visible
               for coll in ax.collections for c in np.atleast_2d(coll.get_edgecolor())}
    assert lesion_colour(1) in colours


def test_montage_outlines_where_the_t1_does_not_reach(study: tuple) -> None:
    """A T1 slab short of the field: the STIR panels outline its reach (dashed), say so in the subtitle,
    and a slice it misses altogether says that in its title; a full T1 draws none of this."""
    from bmeseg.qa.figures import T1_REACH_COLOUR

    res, _ = study
    lab = res.measurements.lesion_labels
    ks = select_slices(lab, res.marrow.bones)

    def reach_lines(fig: Any) -> int:
        return sum(1 for ax in fig.axes for coll in ax.collections
                   for c in np.atleast_2d(coll.get_edgecolor())
                   if "#" + "".join(f"{round(float(x) * 255):02x}" for x in c[:3]) == T1_REACH_COLOUR)

    full = montage(res.stir, res.t1, lab, res.marrow.bones)
    assert reach_lines(full) == 0 and not any("reach" in t for t in _texts(full))
    a = np.array(res.t1.array)
    a[: a.shape[0] // 3] = 0  # the slab stops a third of the way across
    a[..., ks[-1]] = 0  # and misses one shown slice altogether
    short = montage(res.stir, Volume(a, res.t1.geometry), lab, res.marrow.bones)
    texts = _texts(short)
    assert any("edge of the T1's reach" in t for t in texts)
    assert reach_lines(short) >= len(ks) - 1
    titles = [ax.get_title() for ax in short.axes if ax.images and ax.get_title().startswith("STIR")]
    assert sum("the T1 does not reach this slice" in t for t in titles) == 1


def test_registration_check_and_thumbnail(study: tuple) -> None:
    res, _ = study
    fig = registration_check(res.stir, res.t1, registration={"status": "suspicious", "reasons": ["big move"]},
                             lesion_labels=res.measurements.lesion_labels, marrow=res.marrow.bones)
    assert len([ax for ax in fig.axes if ax.images]) == 6
    assert any("SUSPICIOUS" in t for t in _texts(fig)) and any("big move" in t for t in _texts(fig))
    other = Volume(res.t1.array[:-1], Geometry((res.t1.shape[0] - 1, *res.t1.shape[1:]), res.t1.geometry.spacing_mm,
                                               res.t1.geometry.origin_lps_mm, res.t1.geometry.direction))
    with pytest.raises(ValueError, match="STIR grid"):
        registration_check(res.stir, other)
    th = thumbnail(res.stir, res.measurements.lesion_labels, res.marrow.bones)
    assert len(th.axes) == 1 and th.get_size_inches()[0] == 2.0


def test_write_study_qa_is_fast_and_uses_no_pyplot(study: tuple, tmp_path: Path) -> None:
    res, _ = study
    write_study_qa(res, tmp_path / "warm")  # imports matplotlib
    t0 = time.perf_counter()
    paths = write_study_qa(res, tmp_path / "s", name="s")
    dt = time.perf_counter() - t0
    print(f"QA pictures for one study: {dt:.2f} s")
    assert [p.name for p in paths] == list(QA_FILES)
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert dt < 10.0  # ~1 s on an idle 2-core machine; generous for a shared one
    code = ("import sys; from tests.conftest import tiny_pair; from bmeseg.qa import montage; import numpy as np; "
            "t1, s, m = tiny_pair(); montage(s, t1, m.array.astype(np.uint8)).savefig('/dev/null', format='png'); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=120)


def test_run_writes_pictures(study: tuple, tmp_path: Path) -> None:
    _, d = study
    out = tmp_path / "out"
    assert main(["run", "--t1", str(d / "t1.nii.gz"), "--stir", str(d / "stir.nii.gz"), "-o", str(out)]) == 0
    for name in QA_FILES:
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_run_without_matplotlib_skips_pictures_with_a_warning(study: tuple, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    _, d = study
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import of it now raises ImportError
    out = tmp_path / "out"
    assert main(["run", "--t1", str(d / "t1.nii.gz"), "--stir", str(d / "stir.nii.gz"), "-o", str(out)]) == 0
    assert (out / "report.json").is_file() and not (out / "qa.png").exists()
    rep = json.loads((out / "report.json").read_text())
    assert any("QA pictures not written" in w and "bmeseg[qa]" in w for w in rep["warnings"])


def test_a_drawing_bug_does_not_fail_the_run(study: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bmeseg.qa.figures as figures

    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(figures, "montage", broken)
    _, d = study
    res = run_study(StudyInput(t1=str(d / "t1.nii.gz"), stir=str(d / "stir.nii.gz")), tmp_path / "o")
    assert (tmp_path / "o" / "report.json").is_file() and not (tmp_path / "o" / "qa.png").exists()
    assert any("RuntimeError: boom" in w for w in res.report["warnings"])


def test_flag_outliers_known_answers() -> None:
    rows: list[dict[str, Any]] = [{"study": f"s{i}", "status": "done", "bme_volume_ml": v, "marrow_volume_ml": m, "extent_fraction": f,
             "registration_status": r, "n_warnings": w}
            for i, (v, m, f, r, w) in enumerate([
                (1.0, 100.0, 1.0, "ok", 0), (1.2, 110.0, 1.0, "ok", 0), (0.9, 95.0, 1.0, "ok", 0),
                (1.1, 105.0, 1.0, "ok", 0), (40.0, 100.0, 40.0, "ok", 0),  # very large (Q3 + 3 IQR)
                (0.0, 100.0, 0.0, "suspicious", 2),  # zero, suspicious, warnings
                (1.0, 30.0, 3.0, "failed", 0),  # low marrow, failed registration
                (1.0, 0.5, 60.0, "ok", 0),  # almost no marrow, more than half of it BME
            ])]
    rows.append({"study": "x", "status": "failed"})
    flag_outliers(rows)
    flags = {r["study"]: {f for _, f in r["flags"]} for r in rows}
    sev = {r["study"]: r["severity"] for r in rows}
    assert flags["s0"] == set() and sev["s0"] == 0
    assert flags["s4"] == {"very large BME"}
    assert flags["s5"] == {"zero BME", "registration suspicious", "2 warning(s)"} and sev["s5"] == 1
    assert flags["s6"] == {"low marrow volume", "registration failed"} and sev["s6"] == 2
    assert flags["s7"] == {"low marrow volume", "very large BME"} and sev["s7"] == 2
    assert flags["x"] == {"run failed"} and sev["x"] == 2


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key):
                self.refs.append(str(a[key]))


def _local_refs(page: Path) -> list[str]:
    p = _Links()
    p.feed(page.read_text(encoding="utf-8"))
    return [r for r in p.refs if not r.startswith(("data:", "#"))]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cohort(tmp_path_factory.mktemp("cohort_out"), tmp_path_factory.mktemp("cohort_src"))


def test_load_cohort_merges_reports_csv_and_failures(cohort: Path) -> None:
    rows = {r["study"]: r for r in load_cohort(cohort)}
    assert set(rows) == {"lesion_a", "clean_b", "badreg_c", "broken_d"}
    assert rows["lesion_a"]["n_lesions"] == 1 and rows["lesion_a"]["csv_site"] == "Basel"
    assert rows["lesion_a"]["thumb"] == "lesion_a/qa_thumb.png" and rows["lesion_a"]["runtime_s"] > 0
    assert rows["clean_b"]["bme_volume_ml"] == 0.0 and "zero BME" in {f for _, f in rows["clean_b"]["flags"]}
    assert rows["badreg_c"]["severity"] == 2 and rows["badreg_c"]["n_warnings"] >= 1
    assert rows["broken_d"]["status"] == "failed" and "truncated" in rows["broken_d"]["error"]


def test_report_command_writes_self_contained_pages(cohort: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(cohort)]) == 0
    assert "4 studies" in capsys.readouterr().out
    page = cohort / "index.html"
    html = page.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html  # nothing fetched from the network
    assert 'id="studies"' in html and html.count("<tr class=") == 4
    assert 'class="sev-2"' in html and "registration failed" in html and "truncated file" in html
    refs = _local_refs(page)
    assert "lesion_a/index.html" in refs and "lesion_a/qa_thumb.png" in refs and "failures.csv" in refs
    for ref in refs:
        assert (cohort / ref).is_file(), ref
    for name in ("lesion_a", "clean_b", "badreg_c"):
        sp = cohort / name / "index.html"
        shtml = sp.read_text(encoding="utf-8")
        assert "qa.png" in shtml and "registration.png" in shtml and "../index.html" in shtml
        for ref in _local_refs(sp):
            assert (sp.parent / ref).is_file(), (name, ref)
    assert "metric did not improve" in (cohort / "badreg_c" / "index.html").read_text(encoding="utf-8")


def test_report_redraws_missing_pictures_and_handles_one_study(cohort: Path, tmp_path: Path) -> None:
    import shutil

    study = tmp_path / "one"
    shutil.copytree(cohort / "lesion_a", study)
    for name in QA_FILES:
        (study / name).unlink()
    assert main(["report", str(study)]) == 0
    assert (study / "index.html").is_file() and not (study / "qa.png").exists()
    assert "No pictures" in (study / "index.html").read_text(encoding="utf-8")
    assert main(["report", str(study), "--pictures"]) == 0
    assert all((study / n).is_file() for n in QA_FILES)
    assert "../index.html" not in (study / "index.html").read_text(encoding="utf-8")


def test_report_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no study folders" in capsys.readouterr().err
