"""`bmeseg discover` and `bmeseg convert`: library functions and the CLI, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bmeseg.cli import main
from bmeseg.discover import discover, format_discovery
from bmeseg.io.dicom_write import MRAcquisition, new_uid, write_dicom_series
from bmeseg.volume import Geometry, Volume

T1 = MRAcquisition("t1_tse_cor", 2, repetition_time_ms=550.0, echo_time_ms=11.0)
STIR = MRAcquisition("tirm_cor", 3, repetition_time_ms=4200.0, echo_time_ms=35.0, inversion_time_ms=150.0,
                     scanning_sequence="SE\\IR", scan_options="IR")
LOC = MRAcquisition("localizer", 1, repetition_time_ms=8.0, echo_time_ms=4.0, scanning_sequence="GR")

SERIES_KEYS = {
    "key", "series_instance_uid", "series_number", "series_description", "protocol_name", "modality",
    "manufacturer", "plane", "rows", "columns", "pixel_spacing_mm", "slice_thickness_mm", "n_slices", "n_frames",
    "n_files", "repetition_time_ms", "echo_time_ms", "inversion_time_ms", "flip_angle_deg", "image_type",
    "is_enhanced", "is_mosaic", "classification", "reason", "warnings",
}


def _vol(shape: tuple[int, int, int], seed: int) -> Volume:
    rng = np.random.default_rng(seed)
    direction = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # coronal
    return Volume(rng.uniform(0, 1000, shape).astype(np.float32),
                  Geometry(shape, (0.8, 0.8, 3.0), (-10.0, 5.0, 20.0), direction))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Study A: localizer + T1 + STIR (a pair); study B: T1 only; junk and a truncated file."""
    root = tmp_path_factory.mktemp("tree")
    a, b = new_uid("study-a"), new_uid("study-b")
    fa, fb = new_uid("for-a"), new_uid("for-b")
    write_dicom_series(_vol((8, 6, 6), 0), root / "A" / "t1", T1, study_uid=a, frame_of_reference_uid=fa)
    write_dicom_series(_vol((8, 6, 6), 1), root / "A" / "stir", STIR, study_uid=a, frame_of_reference_uid=fa)
    write_dicom_series(_vol((8, 6, 1), 2), root / "A" / "loc", LOC, study_uid=a, frame_of_reference_uid=fa)
    files = write_dicom_series(_vol((8, 6, 5), 3), root / "B" / "x" / "y", T1, study_uid=b,
                               frame_of_reference_uid=fb)
    data = files[-1].read_bytes()
    (root / "B" / "cut.dcm").write_bytes(data[: len(data) - 20])
    (root / "README.txt").write_text("export notes")
    return root


def test_discover_lists_studies_series_and_pairs(tree: Path) -> None:
    rep = discover(tree, jobs=1)
    assert rep["schema_version"] == 1
    assert (rep["n_files"], rep["n_series"], rep["n_studies"], rep["n_skipped"]) == (20, 4, 2, 2)
    assert rep["skipped_reasons"] == {"not a DICOM file": 1, "truncated": 1}
    by_desc = {}
    for st in rep["studies"]:
        for s in st["series"]:
            assert set(s) == SERIES_KEYS
            by_desc.setdefault(s["series_description"], []).append(s)
    t1 = next(s for s in by_desc["t1_tse_cor"] if s["n_files"] == 6)  # study A's
    assert (t1["plane"], t1["rows"], t1["columns"], t1["n_slices"]) == ("coronal", 6, 8, 6)
    assert t1["pixel_spacing_mm"] == [0.8, 0.8] and t1["slice_thickness_mm"] == 3.0
    assert (t1["repetition_time_ms"], t1["echo_time_ms"], t1["inversion_time_ms"]) == (550.0, 11.0, None)
    assert [s["classification"] for s in by_desc["t1_tse_cor"]] == ["t1", "t1"]
    assert by_desc["tirm_cor"][0]["classification"] == "stir"
    assert by_desc["tirm_cor"][0]["inversion_time_ms"] == 150.0
    assert by_desc["localizer"][0]["classification"] == "localizer"
    assert all(s["reason"] for v in by_desc.values() for s in v)

    study_a = next(st for st in rep["studies"] if st["n_series"] == 3)
    study_b = next(st for st in rep["studies"] if st["n_series"] == 1)
    assert study_a["pair_error"] is None
    assert study_a["pair"]["t1"] == t1["key"]
    assert study_a["pair"]["fluid"] == by_desc["tirm_cor"][0]["key"]
    assert study_a["pair"]["fluid_classification"] == "stir"
    assert study_b["pair"] is None
    assert "fluid-sensitive" in study_b["pair_error"]
    json.dumps(rep)  # JSON-ready


def test_format_discovery_table(tree: Path) -> None:
    text = format_discovery(discover(tree, jobs=1))
    assert "20 file(s), 4 series in 2 study(ies), 2 skipped" in text
    assert "run would use: T1 #2" in text and 'STIR #3 "tirm_cor"' in text
    assert "run would stop (exit 3): no fat-suppressed fluid-sensitive series" in text
    for word in ("coronal", "8x6", "0.8x0.8x3", "4200", "150", "stir", "t1", "localizer"):
        assert word in text, word
    assert "cut.dcm: truncated" in text
    assert "README.txt" not in text  # plain non-DICOM files are only counted


def test_cli_discover_json_and_exit_codes(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["discover", str(tree), "--json", "--no-progress"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n_series"] == 4 and len(rep["studies"]) == 2

    assert main(["discover", str(tree)]) == 0
    assert "run would use" in capsys.readouterr().out

    assert main(["discover", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    assert main(["discover", str(tmp_path / "junk"), "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n_series"] == 0
    assert "no DICOM image series found" in captured.err
    assert main(["discover", str(tree), "--jobs", "0"]) == 2


def test_cli_convert_summary(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nii"
    assert main(["convert", str(tree / "A"), "-o", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "wrote 3 series" in text
    assert sorted(p.name for p in out.iterdir()) == [
        "1_localizer.json", "1_localizer.nii.gz", "2_t1_tse_cor.json", "2_t1_tse_cor.nii.gz",
        "3_tirm_cor.json", "3_tirm_cor.nii.gz"]
    assert "3_tirm_cor.nii.gz  8x6x6" in text
    side = json.loads((out / "3_tirm_cor.json").read_text())
    assert side["InversionTime"] == pytest.approx(0.15)

    # outputs exist: refused without --force (exit 2), replaced with it
    assert main(["convert", str(tree / "A"), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["convert", str(tree / "A"), "-o", str(out), "--force"]) == 0
    capsys.readouterr()

    # study B: the truncated copy is skipped (named, with the reason), the series converts
    assert main(["convert", str(tree / "B"), "-o", str(tmp_path / "b")]) == 0
    text = capsys.readouterr().out
    assert "wrote 1 series" in text and "cut.dcm: truncated" in text


def test_cli_convert_reports_skipped_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = write_dicom_series(_vol((8, 6, 5), 4), tmp_path / "in", T1, study_uid=new_uid(),
                               frame_of_reference_uid=new_uid())
    files[2].unlink()  # a missing slice: the only series cannot be assembled
    assert main(["convert", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "wrote 0 series" in captured.out
    assert 'skipped 1 series:\n  #2 "t1_tse_cor"' in captured.out and "not uniform" in captured.out
    assert "no series could be converted" in captured.err
    assert main(["convert", str(tmp_path / "nothing"), "-o", str(tmp_path / "out")]) == 2


def test_progress_bar_and_plain_fallback(tree: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    assert discover(tree, jobs=1, progress=True)["n_series"] == 4
    assert "indexing DICOM" in capsys.readouterr().err  # the tqdm bar (on stderr)
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)  # tqdm not installed: plain log lines
    assert discover(tree, jobs=1, progress=True)["n_series"] == 4
    assert "indexing DICOM" not in capsys.readouterr().err
