"""The QA pages in a real headless Chromium: no console errors, every picture loads, sorting and filters work.

Chromium comes from Debian's packages: when ``/usr/bin/chromium`` is missing and the tests run as
root, the session fixture installs it (``apt-get update && apt-get install -y chromium``); the
tests skip, saying why, only when that is impossible. Pages are served from 127.0.0.1 by
``http.server``; Chromium's own network features are switched off, so nothing leaves the machine.

A probe script is injected into a copy of each page: it records script errors, failed resource
loads and ``console.error`` calls, waits for every image, drives the table's sort and filters,
and writes what it saw into the DOM, which ``--dump-dom`` prints. Console messages Chromium logs
to stderr are checked too. Set ``BMESEG_SCREENSHOT_DIR`` to keep the page screenshot.
"""

from __future__ import annotations

import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bmeseg.cli import main
from bmeseg.qa import load_cohort

from .qa_helpers import make_cohort

pytest.importorskip("matplotlib")

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
]

PROBE = r"""<script>
(function () {
  var probe = window.__probe = { errors: [] };
  window.addEventListener("error", function (e) {
    var t = e.target;
    probe.errors.push(e.message ? "script error: " + e.message
      : "failed to load: " + (t && (t.src || t.href || t.tagName)));
  }, true);
  window.addEventListener("unhandledrejection", function (e) { probe.errors.push("rejection: " + e.reason); });
  var orig = console.error;
  console.error = function () {
    probe.errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return orig.apply(console, arguments);
  };
  function visibleStudies() {
    var t = document.getElementById("studies");
    return Array.prototype.filter.call(t.tBodies[0].rows, function (r) { return !r.hidden; })
      .map(function (r) { return r.getAttribute("data-study"); });
  }
  function setValue(id, prop, v) {
    var el = document.getElementById(id); el[prop] = v;
    el.dispatchEvent(new Event(prop === "checked" ? "change" : "input", { bubbles: true }));
  }
  function interact() {
    var t = document.getElementById("studies");
    if (!t) { return null; }
    var out = {};
    var th = Array.prototype.filter.call(t.tHead.rows[0].cells, function (c) {
      return c.textContent.trim() === "BME mL"; })[0];
    th.click(); out.bme_asc = visibleStudies();
    th.click(); out.bme_desc = visibleStudies();
    setValue("filter-text", "value", "clean"); out.text_clean = visibleStudies();
    setValue("filter-text", "value", "");
    setValue("filter-flagged", "checked", true); out.flagged = visibleStudies();
    out.shown_count = document.getElementById("shown-count").textContent;
    setValue("filter-flagged", "checked", false);
    setValue("filter-registration", "value", "failed"); out.reg_failed = visibleStudies();
    setValue("filter-registration", "value", ""); out.all = visibleStudies();
    return out;
  }
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    imgs.forEach(function (i) { i.loading = "eager"; });
    Promise.all(imgs.map(function (i) {
      return i.complete ? null : new Promise(function (ok) {
        i.addEventListener("load", ok); i.addEventListener("error", ok); });
    })).then(function () {
      var result = {
        errors: probe.errors,
        n_images: imgs.length,
        broken_images: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
          .map(function (i) { return i.getAttribute("src"); }),
        interaction: null
      };
      try { result.interaction = interact(); } catch (err) { result.errors.push("probe: " + err); }
      var pre = document.createElement("pre");
      pre.id = "probe-result";
      pre.textContent = JSON.stringify(result);
      document.body.appendChild(pre);
    });
  });
}());
</script>
"""


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a Chromium binary; installs Debian's package when missing and running as root."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("Chromium is not installed and installing it needs root (apt-get install chromium)")
    if shutil.which("apt-get") is None:
        pytest.skip("Chromium is not installed and there is no apt-get to install it with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200, check=False)
        log.append(r.stdout[-1500:] + r.stderr[-1500:])
        if r.returncode != 0:
            pytest.skip(f"could not install Chromium with {' '.join(cmd)} (exit {r.returncode}):\n{log[-1]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed 'chromium' but no chromium binary is on PATH:\n" + "\n".join(log))
    return found


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def served_cohort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    out = make_cohort(tmp_path_factory.mktemp("browser_out"), tmp_path_factory.mktemp("browser_src"))
    assert main(["report", str(out)]) == 0
    handler = functools.partial(_QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield out, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _run_chromium(chromium: str, profile: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _probe(chromium: str, page: Path, base_url: str, root: Path, profile: Path) -> dict[str, Any]:
    """Load a probed copy of ``page`` in Chromium; the probe's findings plus console lines from stderr."""
    text = page.read_text(encoding="utf-8")
    probed = page.with_name("_probe_" + page.name)
    probed.write_text(text.replace("<head>\n", "<head>\n" + PROBE, 1), encoding="utf-8")
    url = f"{base_url}/{probed.relative_to(root).as_posix()}"
    r = _run_chromium(chromium, profile, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000",
                      "--dump-dom", url)
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', r.stdout, re.S)
    assert m, f"the probe did not report (page did not load?)\nstdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(html.unescape(m.group(1)))
    result["console"] = [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln]
    return result


def _names(rows: list[dict[str, Any]], key: str, reverse: bool = False) -> list[str]:
    have = [r for r in rows if r.get(key) is not None]
    blank = [r["study"] for r in rows if r.get(key) is None]
    return [r["study"] for r in sorted(have, key=lambda r: r[key], reverse=reverse)] + blank


def test_cohort_page_loads_clean_and_its_table_sorts_and_filters(
        chromium: str, served_cohort: tuple[Path, str], tmp_path: Path) -> None:
    out, url = served_cohort
    res = _probe(chromium, out / "index.html", url, out, tmp_path / "profile")
    assert res["errors"] == [] and res["console"] == [], res
    assert res["n_images"] == 3 and res["broken_images"] == []  # three thumbnails (broken_d has none)
    rows = load_cohort(out)
    it = res["interaction"]
    assert it["bme_asc"] == _names(rows, "bme_volume_ml")
    assert it["bme_desc"][:3] == _names(rows, "bme_volume_ml", reverse=True)[:3]
    assert it["bme_desc"][-1] == "broken_d"  # blanks stay last both ways
    assert it["text_clean"] == ["clean_b"]
    flagged = sorted(r["study"] for r in rows if r["flags"])
    assert sorted(it["flagged"]) == flagged and it["shown_count"] == str(len(flagged))
    assert it["reg_failed"] == ["badreg_c"]
    assert len(it["all"]) == 4


def test_study_page_loads_clean_with_its_pictures(chromium: str, served_cohort: tuple[Path, str],
                                                  tmp_path: Path) -> None:
    out, url = served_cohort
    res = _probe(chromium, out / "lesion_a" / "index.html", url, out, tmp_path / "profile")
    assert res["errors"] == [] and res["console"] == [], res
    assert res["n_images"] == 2 and res["broken_images"] == []


def test_cohort_page_screenshot(chromium: str, served_cohort: tuple[Path, str], tmp_path: Path) -> None:
    out, url = served_cohort
    shot = tmp_path / "cohort.png"
    r = _run_chromium(chromium, tmp_path / "profile", "--window-size=1400,900", "--virtual-time-budget=10000",
                      f"--screenshot={shot}", f"{url}/index.html")
    assert r.returncode == 0, r.stderr[-3000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    keep = os.environ.get("BMESEG_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "cohort.png")
        shutil.copy(out / "lesion_a" / "qa.png", Path(keep) / "qa.png")


def test_the_probe_catches_broken_pictures_and_script_errors(chromium: str, served_cohort: tuple[Path, str],
                                                             tmp_path: Path) -> None:
    """The harness itself: a page with a missing picture and a failing script must not pass."""
    out, url = served_cohort
    bad = out / "bad.html"
    bad.write_text("<!DOCTYPE html>\n<html>\n<head>\n<link rel=\"icon\" href=\"data:,\">\n</head>\n<body>"
                   "<img src=\"lesion_a/qa_thumb.png\"><img src=\"missing.png\">"
                   "<script>console.error('oops'); undefinedFunction();</script></body></html>\n", encoding="utf-8")
    res = _probe(chromium, bad, url, out, tmp_path / "profile")
    assert res["n_images"] == 2 and res["broken_images"] == ["missing.png"]
    assert any("missing.png" in e for e in res["errors"])
    assert any("undefinedFunction" in e for e in res["errors"]) and any("oops" in e for e in res["errors"])
    assert any("oops" in line for line in res["console"])
