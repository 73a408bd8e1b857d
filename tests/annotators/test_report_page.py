"""The auditor's report from hand-built audit tables whose numbers are known; opened in real headless Chromium."""

import pathlib
import shutil
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vlaforge.annotators import audit_stats as stats
from vlaforge.annotators.audit_table import AuditTable, read_audit
from vlaforge.annotators.consensus import ConsensusStage
from vlaforge.annotators.grounding_frame import Detection, DetectorRun, RunStatus
from vlaforge.annotators.report_page import build_report, serve_report
from vlaforge.flows.cli import main

MUG, SHELF = (10.0, 10.0, 30.0, 40.0), (40.0, 5.0, 62.0, 20.0)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _mask(box, shape=(48, 64)):
    mask = np.zeros(shape, bool)
    x1, y1, x2, y2 = (int(v) for v in box)
    mask[y1:y2, x1:x2] = True
    return mask


def _det(phrase, box, score=0.8):
    return Detection(phrase, box, score, _mask(box))


def _runs(gd, ll, hosted):
    def run(name, detections):
        if isinstance(detections, str):
            return DetectorRun(name, f"{name}-model", "sha256:1", RunStatus.FAILED, [], detections)
        return DetectorRun(name, f"{name}-model", "sha256:1", RunStatus.OK, detections)

    return [run("grounding_dino", gd), run("llmdet", ll), run("gdino_1_5", hosted)]


def write_audit(directory: pathlib.Path, frame_factory) -> pathlib.Path:
    """Three images: one with an agreed mug, a lone shelf and a hallucinated elephant; one with the hosted API
    failed and a borderline shelf; one (another dataset) where all boxes are disjoint."""
    f0 = frame_factory(0, negatives=("elephant",))
    f0.runs = _runs([_det("red mug", MUG), _det("shelf", SHELF)], [_det("red mug", MUG)],
                    [_det("red mug", MUG), _det("elephant", (0.0, 0.0, 8.0, 8.0))])
    f1 = frame_factory(1, episode="ep-2")
    f1.runs = _runs([_det("red mug", MUG), _det("shelf", SHELF)],
                    [_det("red mug", MUG), _det("shelf", (40.0, 5.0, 62.0, 25.0))], "HTTP 503: gave up")
    f2 = frame_factory(2, episode="ep-3")
    f2.dataset = "molmoact"
    f2.runs = _runs([_det("red mug", (0.0, 0.0, 10.0, 10.0))], [_det("red mug", (40.0, 30.0, 60.0, 45.0))], [])
    stage = ConsensusStage.Config(box_iou=0.8, review_margin=0.1).build()
    stage([f0, f1, f2])
    for name, rows in stage.take_tables().items():  # as the job writes and gathers them
        pq.write_table(pa.Table.from_pylist(rows), directory / f"{name}.parquet")
    return directory


@pytest.fixture
def audit_dir(tmp_path, frame_factory):
    (tmp_path / "audit").mkdir()
    return write_audit(tmp_path / "audit", frame_factory)


def test_stats_count_what_the_table_holds(audit_dir):
    rows = read_audit(audit_dir, AuditTable.CANDIDATES).to_pylist()
    frames = read_audit(audit_dir, AuditTable.FRAMES).to_pylist()
    assert stats.decision_counts(rows) == {"accepted": 2, "rejected": 4, "needs_review": 1}
    assert stats.reason_counts(rows) == [("rejected", "single_detector", 3), ("accepted", "agreed", 2),
                                         ("needs_review", "borderline_box_iou", 1),
                                         ("rejected", "negative_phrase", 1)]
    mug = next(s for s in stats.phrase_stats(rows) if s.phrase == "red mug")
    assert (mug.candidates, mug.accepted, mug.rejected) == (4, 2, 2) and mug.agreement == 0.5
    pairs = {(p.a, p.b): p for p in stats.pair_stats(rows)}
    gd_ll = pairs[("grounding_dino", "llmdet")]
    assert (gd_ll.either, gd_ll.agreed) == (6, 2)  # 4 mug candidates (2 disjoint) + 2 shelves; 2 mugs agreed
    detectors = {d.detector: d for d in stats.detector_stats(rows, frames)}
    assert (detectors["gdino_1_5"].images_ok, detectors["gdino_1_5"].images_failed) == (2, 1)
    assert detectors["gdino_1_5"].errors == {"HTTP 503": 1} and detectors["gdino_1_5"].negative_hits == 1
    assert detectors["grounding_dino"].lone_votes == 2 and detectors["llmdet"].votes == 4
    boxes, masks = stats.iou_values(rows)
    assert len(boxes) == len(masks) == 5


def test_report_is_one_self_contained_page_with_the_table_counts(audit_dir, tmp_path):
    summary = build_report([audit_dir], tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text()
    assert (summary.accepted, summary.rejected, summary.needs_review, summary.images) == (2, 4, 1, 3)
    assert "id='count-accepted'>2<" in page and "id='count-needs_review'>1<" in page
    assert summary.cards == 7  # every image is flagged, so every candidate is shown (accepted ones too)
    assert page.count("data:image/jpeg;base64,") == summary.cards
    assert "src='http" not in page and "href='http" not in page  # nothing fetched from elsewhere


def test_report_cli_builds_from_an_annotate_output(audit_dir, tmp_path, capsys):
    assert main(["report", "build", str(audit_dir.parent), "--output", str(tmp_path / "r")]) == 0
    assert "accepted 2, rejected 4, needs review 1" in capsys.readouterr().out
    assert main(["report", "build", str(tmp_path / "nothing-here")]) == 2


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium; .ci/run installs it)")
def test_report_in_headless_chromium_shows_the_counts_filters_and_draws(audit_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    build_report([audit_dir], tmp_path / "report")
    table = pq.read_table(audit_dir / "audit.parquet").to_pylist()
    expected = {d: sum(r["decision"] == d for r in table) for d in ("accepted", "rejected", "needs_review")}
    server = serve_report(tmp_path / "report", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1200, "height": 1600})
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            shown = {d: int(page.locator(f"#count-{d}").inner_text()) for d in expected}
            assert shown == expected
            assert int(page.locator("#count-candidates").inner_text()) == len(table)
            page.select_option("#filter-decision", "needs_review")
            visible = page.locator(".card:visible")
            assert visible.count() == int(page.locator("#shown-count").inner_text()) == 1
            assert visible.first.get_attribute("data-decision") == "needs_review"
            page.select_option("#filter-decision", "")
            page.select_option("#filter-dataset", "molmoact")
            assert page.locator(".card:visible").count() == 2
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    pixels = np.asarray(Image.open(tmp_path / "report.png").convert("RGB"))
    assert pixels.shape[0] > 500 and pixels.std() > 20
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # photos and charts, not a blank page
