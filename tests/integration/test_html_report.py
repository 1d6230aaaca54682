"""RUN/report.html (verdict/html_page.py): one self-contained page, checked as text and in a real headless
Chromium (Debian's `chromium`, which .ci/run installs): it renders, the verdict and the flagged label are
in its DOM, a screenshot is taken and has the page's size and content."""

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nc_engine.detectors.margin_result import MarginResult
from nc_engine.run.runfolder import RunFolder
from nc_engine.verdict.combine import with_detectors
from nc_engine.verdict.html_page import html_page, write_page
from nc_engine.verdict.report import Report, build_report
from nc_engine.verdict.rows import ScanInfo
from nc_engine.verdict.sentence import verdict_sentence
from tests.conftest import in_ci
from tests.event_factory import record

TARGET = 7
HOSTILE = '<script>document.title="owned"</script><img src=x onerror=alert(1)>'


def _run(tmp_path: Path) -> tuple[Report, RunFolder]:
    run = tmp_path / "runs" / "m-20261203-120000"
    (run / "triggers").mkdir(parents=True)
    (run / "config.toml").write_text('[model]\npath = "m.pt"  # <b>not markup</b>\n')
    (run / "fingerprints.json").write_text('{"model": "size:10:sha256:abc"}')
    trials = []
    for label in range(10):
        mask = np.zeros((28, 28), np.float32)
        if label == TARGET:
            mask[23:27, 1:5] = 1.0
        else:
            mask[label : label + 7, 4:10] = 0.9 + label / 100
        RunFolder(run).save_trigger(label, mask, np.full((1, 28, 28), 0.5, np.float32))
        trials.append(record(label, seed=label, l1_norm=float(mask.sum()), steps=60))
    names = [f"class-{k}" for k in range(10)]
    names[3] = HOSTILE
    info = ScanInfo(clean_accuracy=0.97, seconds=12.5, images=76_000, device="cpu", model="m.pt", class_names=names)
    report = build_report(
        trials,
        labels_planned=list(range(10)),
        threshold=1.11,
        statistic="log_l1",
        info=info,
        run_dir=str(run),
        spread_floor=0.7,
    )
    margins = MarginResult.judged([10.0, 11, 12, 10.5, 11.5, 10.2, 90.0, 10.9, 11.1, 10.0], 2000, 1.5, {})
    return with_detectors(report, {"max_margin": margins}), RunFolder(run)


def test_the_page_holds_the_evidence_embeds_every_picture_and_escapes_the_folders_text(tmp_path):
    report, folder = _run(tmp_path)
    assert report.flagged == [6, TARGET]  # one by Neural Cleanse, one by the margins
    page = html_page(report, folder)
    assert verdict_sentence(report).replace("'", "&#x27;") in page
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;not markup&lt;/b&gt;" in page
    pictures = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pictures) == 30
    assert all(Image.open(io.BytesIO(base64.b64decode(p))).size == (28, 28) for p in pictures)
    assert 'id="trigger-chart"' in page and 'id="margin-chart"' in page and "size:10:sha256:abc" in page
    assert re.search(rf'<tr class="flagged" data-label="{TARGET}">', page)
    assert "http://" not in page and "https://" not in page  # nothing to fetch: it opens offline
    assert "default-src 'none'" in page


def test_a_picture_that_is_not_a_png_or_is_a_link_is_not_embedded(tmp_path):
    report, folder = _run(tmp_path)
    (folder.path / "triggers" / "label_000_mask.png").write_bytes(b"<svg onload=alert(1)>")
    page = html_page(report, folder)
    assert "not a PNG" in page and len(re.findall(r"data:image/png;base64,", page)) == 29


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if in_ci():
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def _headless(chromium: str, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120)


def test_the_page_renders_in_headless_chromium_with_the_verdict_and_the_flagged_label(tmp_path):
    chromium = _chromium()
    report, folder = _run(tmp_path)
    page = write_page(report, folder)
    assert page == folder.path / "report.html"
    dom = _headless(chromium, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<p id="verdict" class="backdoored">BACKDOORED: label 6 (class-6), 7 (class-7)' in dom.stdout
    assert f'data-label="{TARGET}"' in dom.stdout and "<title>owned</title>" not in dom.stdout
    shot = tmp_path / "page.png"
    taken = _headless(chromium, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri())
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1600)
    pixels = np.asarray(image)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, bars and pictures, not a blank page
    flagged_red = (pixels[..., 0] > 150) & (pixels[..., 1] < 70) & (pixels[..., 2] < 70)
    assert flagged_red.sum() > 200  # the flagged labels' red bars are drawn


def test_a_finished_scan_writes_its_page_and_report_html_rewrites_it(tmp_path):
    from nc_tui.cli import main

    report, folder = _run(tmp_path)
    folder.write_report(report)
    assert main(["report", str(folder.path), "--html"]) == 0
    assert "BACKDOORED: label 6" in (folder.path / "report.html").read_text()
