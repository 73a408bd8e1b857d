"""The auditor's report from hand-built audit tables whose numbers are known; its gallery in real headless Chromium;
the review loop (export to COCO, import reviewed decisions, the next consensus run applying them)."""

import json
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
from vlaforge.annotators.report_gallery import GalleryOptions, detector_colors
from vlaforge.annotators.report_page import ReportOptions, build_report, serve_report
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
    rows = read_audit(audit_dir, AuditTable.CANDIDATES)
    frames = read_audit(audit_dir, AuditTable.FRAMES)
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


def test_the_gallery_samples_per_stratum_with_a_seed_and_writes_data_beside_the_page(audit_dir, tmp_path):
    summary = build_report([audit_dir], tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text()
    assert (summary.accepted, summary.rejected, summary.needs_review, summary.images) == (2, 4, 1, 3)
    assert "id='count-accepted'>2<" in page and "id='count-needs_review'>1<" in page
    index = json.loads((tmp_path / "report" / "data" / "index.json").read_text())
    assert summary.cards == len(index["cards"]) == 3  # one card per image, all its candidates on it
    cards = json.loads((tmp_path / "report" / "data" / "cards-00000.json").read_text())
    assert sorted(len(c["candidates"]) for c in cards) == [2, 2, 3]
    assert all((tmp_path / "report" / c["image"]).stat().st_size > 0 for c in cards)
    assert "data:image" not in page and "src='http" not in page  # no image inlined, nothing fetched from elsewhere
    one = build_report([audit_dir], tmp_path / "one", ReportOptions(gallery=GalleryOptions(per_stratum=1)))
    again = build_report([audit_dir], tmp_path / "again", ReportOptions(gallery=GalleryOptions(per_stratum=1)))
    first = json.loads((tmp_path / "one" / "data" / "index.json").read_text())["cards"]
    assert first == json.loads((tmp_path / "again" / "data" / "index.json").read_text())["cards"]  # seeded
    assert one.cards == again.cards <= 3 and {s for c in first for s in c["strata"]} == {
        "synth | red mug | accepted", "synth | shelf | rejected", "synth | elephant | rejected",
        "synth | shelf | needs_review", "molmoact | red mug | rejected"}  # every stratum shown


def test_each_card_shows_its_own_image_across_row_groups_and_batches(audit_dir, tmp_path, monkeypatch):
    """The gallery reads the chosen images' JPEGs a batch at a time: with row groups of two frames, batches of one
    and the first image not kept (so the rows read are not the first ones), every card still gets its own image's
    bytes and size."""
    from vlaforge.annotators import report_gallery

    frames = pq.read_table(audit_dir / "audit_frames.parquet")
    kept = pa.array([False, True, True])
    frames = frames.set_column(frames.schema.get_field_index("image_kept"), "image_kept", kept)
    jpeg = frames.schema.get_field_index("image_jpeg")
    frames = frames.set_column(jpeg, frames.schema.field(jpeg), pa.array(
        [None, *frames.column("image_jpeg").to_pylist()[1:]], frames.schema.field(jpeg).type))
    pq.write_table(frames, audit_dir / "audit_frames.parquet", row_group_size=2)
    monkeypatch.setattr(report_gallery, "_FRAME_BATCH", 1)
    build_report([audit_dir], tmp_path / "report")
    by_key = {f["image_key"]: f for f in frames.to_pylist()}
    cards = json.loads((tmp_path / "report" / "data" / "cards-00000.json").read_text())
    assert sorted(c["image_key"] for c in cards) == sorted(list(by_key)[1:])
    for card in cards:
        frame = by_key[card["image_key"]]
        assert (tmp_path / "report" / card["image"]).read_bytes() == frame["image_jpeg"]
        assert (card["width"], card["height"]) == (frame["image_width"], frame["image_height"])


def test_colours_stay_distinct_for_any_number_of_detectors():
    colors = detector_colors([f"det{i:02d}" for i in range(40)])
    assert len(set(colors.values())) == 40


def test_report_cli_builds_from_an_annotate_output(audit_dir, tmp_path, capsys):
    assert main(["report", "build", str(audit_dir.parent), "--output", str(tmp_path / "r")]) == 0
    assert "accepted 2, rejected 4, needs review 1" in capsys.readouterr().out
    assert main(["report", "build", str(tmp_path / "nothing-here")]) == 2


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium; .ci/run installs it)")
def test_report_in_headless_chromium_filters_toggles_sorts_pages_and_zooms(audit_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    options = ReportOptions(gallery=GalleryOptions(page_size=1, per_page=1))
    build_report([audit_dir], tmp_path / "report", options)
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
            fetched = []
            page.on("request", lambda request: fetched.append(request.url.rsplit("/", 1)[-1]))
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            page.wait_for_selector("#gallery[data-ready='yes'] .card")
            assert {d: int(page.locator(f"#count-{d}").inner_text()) for d in expected} == expected
            data = [name for name in fetched if name.startswith("cards-")]
            assert data == ["cards-00000.json"]  # one page of data, loaded lazily: not every card up front
            assert page.locator(".card").count() == 1 and page.locator("#shown-count").inner_text() == "3"
            page.click("#next")
            page.wait_for_function("document.querySelector('#page-label').textContent.startsWith('page 2')")
            assert "cards-00001.json" in fetched

            page.select_option("#filter-decision", "needs_review")
            page.wait_for_function("document.querySelector('#shown-count').textContent === '1'")
            assert "needs review (borderline_box_iou)" in page.locator(".card").first.inner_text()
            page.select_option("#filter-decision", "")

            page.select_option("#sort", "iou")  # weakest box IoU first: the borderline shelf of ep-2 (0.75)
            page.wait_for_function("document.querySelector('.card') && "
                                   "document.querySelector('.card').innerText.includes('ep-2_000001')")

            visible = page.locator(".card rect.det:visible")
            before = visible.count()
            detectors = json.loads((tmp_path / "report" / "data" / "index.json").read_text())["detectors"]
            llmdet = detectors.index("llmdet")
            page.uncheck(f"input[data-detector-index='{llmdet}']")
            assert 0 < page.locator(".card rect.det:visible").count() < before
            assert page.locator(f".card rect.det-{llmdet}:visible").count() == 0

            page.click(".frame")
            page.wait_for_selector("#modal:not([hidden]) #zoom img")
            assert page.locator("#zoom img").get_attribute("width") == "64"  # full resolution, not the thumbnail
            page.click("#zoom-in")
            assert page.locator("#zoom-level").inner_text() == "200%"
            assert "scale(2)" in page.locator("#zoom").get_attribute("style")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    pixels = np.asarray(Image.open(tmp_path / "report.png").convert("RGB"))
    assert pixels.shape[0] > 500 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100
