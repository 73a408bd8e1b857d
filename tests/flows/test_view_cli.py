"""`vlaforge view`: pages written from a robot dataset and from a corpus manifest, and one opened in real headless
Chromium: the cameras scrub with the slider, the curves carry the dimension names, and a red cube shows red."""

import io
import shutil
import threading

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from vlaforge.flows.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def red_cube_shards(tmp_path_factory, ingest_locally):
    """An ALOHA episode whose high camera looks at a red cube, recorded as ALOHA's recorder does, ingested."""
    from vlaforge.datasets.synth.teleop import make_recording
    from vlaforge.datasets.synth.teleop_hdf5 import write_aloha_hdf5

    root = tmp_path_factory.mktemp("view")
    recording = make_recording(seed=8, duration_s=1.0, fixed_rate_hz=50.0)
    pixels = np.full((96, 128, 3), 128, np.uint8)
    pixels[30:70, 40:90] = (220, 25, 20)
    track = recording.cameras["cam_high"]
    track.jpeg = [simplejpeg.encode_jpeg(pixels, quality=95, colorspace="RGB")] * len(track.jpeg)
    write_aloha_hdf5(root / "raw" / "episode_0.hdf5", recording)
    ingest_locally("teleop-hdf5", root / "raw", root / "shards", min_steps=2, trim_idle=False,
                   validation_fraction=0.0)
    return root / "shards"


def _episode_id(shards):
    import pyarrow.parquet as pq

    return pq.read_table(shards / "manifest.parquet").to_pylist()[0]["episodes"][0]


def test_a_page_per_episode_from_a_corpus_manifest(small_corpus, tmp_path, capsys):
    assert main(["view", str(small_corpus), "--output", str(tmp_path / "pages"), "--max-episodes", "3"]) == 0
    assert "wrote 3 episode pages" in capsys.readouterr().out
    index = (tmp_path / "pages" / "index.html").read_text()
    assert index.count('<a href="episode-') == 3 and "arm_a" in index
    page = next((tmp_path / "pages").glob("episode-*.html")).read_text()
    assert 'class="curves"' in page and "put the red mug on the shelf" in page


def test_an_unknown_episode_is_a_named_error(red_cube_shards, tmp_path, capsys):
    assert main(["view", str(red_cube_shards), "--episode", "nope", "--output", str(tmp_path / "p")]) == 2
    assert "no episode 'nope'" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium; .ci/run installs it)")
def test_the_page_in_headless_chromium(red_cube_shards, tmp_path):
    import functools
    import http.server

    from playwright.sync_api import sync_playwright

    episode = _episode_id(red_cube_shards)
    assert main(["view", str(red_cube_shards), "--episode", episode, "--output", str(tmp_path / "pages")]) == 0
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "pages"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            page.click(f"text={episode}")
            assert page.locator("#episode-id").inner_text() == episode
            assert page.locator("#instruction").inner_text() == "take the red brick off the tower and put it in the bin"
            assert page.locator("#fact-embodiment").inner_text() == "bimanual_2x6dof"
            assert page.locator("img.frame").count() == 3 and page.locator("svg.curves").count() == 2
            names = page.locator("svg.curves").first.locator("polyline.dim").evaluate_all(
                "lines => lines.map(l => l.dataset.name)")
            assert names[0] == "left_waist" and names[-1] == "right_gripper" and len(names) == 14
            assert "right_gripper" in page.locator(".legend").first.inner_text()

            frame = page.locator('.camera[data-camera="exterior_1"] img.frame')
            cursor = page.locator("svg.curves line.cursor").first
            before = cursor.get_attribute("x1")
            page.locator("#step").fill("20")  # a range input: fill sets its value and fires input
            assert frame.get_attribute("src").endswith("/exterior_1/000020.jpg")
            assert cursor.get_attribute("x1") != before and "20 /" in page.locator("#step-shown").inner_text()
            page.keyboard.press("ArrowRight")
            assert frame.get_attribute("src").endswith("/exterior_1/000021.jpg")
            assert frame.evaluate("img => img.complete && img.naturalWidth") == 128

            shot = np.asarray(Image.open(io.BytesIO(frame.screenshot())).convert("RGB")).astype(int)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    red, green, blue = shot[40:60, 55:75].reshape(-1, 3).mean(axis=0)  # the cube, as the browser painted it
    assert red > 180 and green < 70 and blue < 70
    grey = shot[5:20, 5:20].reshape(-1, 3).mean(axis=0)
    assert np.all(np.abs(grey - 128) < 20)
