"""copart studio in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by Selenium, as a person uses the page: open it, choose a target video and upload a
source photo, move the frame slider, click a part on the legend and on the picture, wait for
the preview, render the whole clip, cancel a second render, download the result (its frames
and sound checked), and open a training run to see its curve.

A screenshot is taken at each step (into the test's folder; with COPART_SCREENSHOTS=1 also into
docs/pictures/studio-*.png, the pictures docs/studio.md shows). Without the browser the test
is skipped on a developer's machine and FAILS in CI (the CI variable set), where .ci/run
installs it."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from copart.media.read import probe
from copart.studio.files import Roots
from copart.studio.server import make_app

from .studio_setup import Served, make_folder

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FRAMES = 45  # long enough that a render is still running when the page cancels it


def _browser_or_skip():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install '.[test]')")
    if missing:
        text = f"the browser test needs {', '.join(missing)} (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(text + "; CI must install them (.ci/run does)")
        pytest.skip(text)


@pytest.fixture
def browser(tmp_path):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must download nothing
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1700",
                "--autoplay-policy=no-user-gesture-required", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--mute-audio"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, timeout=60, what="the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(condition)
        if value:
            return value
        time.sleep(0.1)
    message = driver.execute_script("return document.getElementById('message').textContent")
    raise AssertionError(f"timed out waiting for {what}: {condition} (page says: {message!r})")


class Shots:
    def __init__(self, driver, folder: Path):
        self.driver, self.folder, self.taken = driver, folder, []
        self.publish = os.environ.get("COPART_SCREENSHOTS") == "1"

    def __call__(self, name: str) -> Path:
        path = self.folder / f"studio-{name}.png"
        assert self.driver.save_screenshot(str(path)), name
        if self.publish:
            shutil.copy(path, ROOT / "docs" / "pictures" / path.name)
        self.taken.append(path)
        return path


def test_a_person_swaps_hair_renders_cancels_downloads_and_watches_a_run(browser, tmp_path, carphone, astronaut,
                                                                        fixture_checkpoint):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    started = time.monotonic()
    folder = make_folder(tmp_path, carphone, astronaut, fixture_checkpoint, frames=FRAMES)
    (folder / "face.png").unlink()  # the source photo comes as an upload from the page
    shutil.copy(ROOT / "docs" / "pictures" / "train-vis.png", folder / "run" / "train-vis" / "00000010.png")
    photo = tmp_path / "astronaut.png"
    shutil.copy(astronaut, photo)
    roots = Roots(tmp_path / "workspace", [folder])
    served = Served(make_app(roots))
    shots = Shots(browser, tmp_path)
    driver = browser
    try:
        driver.get(served.url + "/")
        _wait(driver, "return document.body.dataset.ready === '1'", what="the page to load")
        assert driver.title == "copart studio"
        shots("1-page")

        # the target from the folder, the source photo uploaded; the model is the folder's checkpoint
        Select(driver.find_element(By.ID, "target")).select_by_value("folder1/talk.mp4")
        driver.find_element(By.ID, "source-upload").send_keys(str(photo))
        # (read in the page: the upload re-renders the lists, so an element found before may be stale)
        _wait(driver, "return document.getElementById('model').value === 'file:folder1/model.pth'",
              what="the folder's checkpoint as the model")
        _wait(driver, "const t = document.getElementById('target-img'), s = document.getElementById('source-img');"
                      "return t.complete && t.naturalWidth > 0 && s.complete && s.naturalWidth > 0",
              what="both segmentations")
        assert driver.find_element(By.ID, "source").get_attribute("value") == "workspace/uploads/astronaut.png"
        _wait(driver, "const rows = document.querySelectorAll('#legend tbody tr'); return rows.length === 11 && "
                      "rows[3].querySelector('input[type=text]').value === 'hair' && "
                      "rows[2].querySelector('input[type=text]').value === 'lips'", what="the legend")

        # the frame slider: five steps to the right shows frame 5
        slider = driver.find_element(By.ID, "frame")
        assert slider.get_attribute("max") == str(FRAMES - 1)
        slider.send_keys(*[Keys.ARROW_RIGHT] * 5)
        _wait(driver, "return document.getElementById('target-img').dataset.frame === '5' && "
                      "document.getElementById('target-img').complete", what="frame 5's segmentation")
        assert driver.find_element(By.ID, "frame-label").text == "5"
        shots("2-segmentation")

        # a part clicked on the legend (hair's first channel), then one clicked on the picture
        driver.find_element(By.CSS_SELECTOR, '#legend tr[data-channel="3"] .swatch').click()
        _wait(driver, "return document.querySelector('#legend tr[data-channel=\"3\"]').classList.contains('on')")
        _wait(driver, "return document.getElementById('preview-status').dataset.state === 'ready'", 60,
              "the preview")
        first_preview = driver.find_element(By.ID, "preview-status").get_attribute("data-result")
        assert driver.find_element(By.ID, "command").text.startswith("copart swap --parts 3 --checkpoint ")
        before = set(driver.execute_script("return [...S.parts]"))
        # a point well inside a part not chosen yet, from the frame's label picture (part numbers)
        import cv2

        seg = driver.execute_script("return S.seg.target")
        labels = cv2.imread(str(roots.resolve(seg["labels"])), cv2.IMREAD_UNCHANGED)
        spot = None
        for channel in sorted(set(np.unique(labels).tolist()) - before - {0}):
            inner = cv2.erode((labels == channel).astype(np.uint8), np.ones((3, 3), np.uint8))
            ys, xs = np.nonzero(inner)
            if len(xs):
                i = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
                spot = (int(xs[i]), int(ys[i]), channel)
                break
        assert spot is not None, "the face shows no other part"
        image = driver.find_element(By.ID, "target-img")
        scale = driver.execute_script("const i = document.getElementById('target-img');"
                                      "return i.clientWidth / i.naturalWidth")
        dx, dy = (spot[0] + 0.5 - seg["width"] / 2) * scale, (spot[1] + 0.5 - seg["height"] / 2) * scale
        ActionChains(driver).move_to_element_with_offset(image, round(dx), round(dy)).click().perform()
        _wait(driver, f"return S.parts.size !== {len(before)}", what="the click on the picture to toggle a part")
        after = set(driver.execute_script("return [...S.parts]"))
        assert after == before | {spot[2]}, (before, after, spot)
        _wait(driver, "const s = document.getElementById('preview-status');"
                      f"return s.dataset.state === 'ready' && s.dataset.result !== '{first_preview}'", 60,
              "the preview of the new choice")
        _wait(driver, "const v = document.getElementById('preview-video'); return v.readyState >= 2 && "
                      "v.videoWidth === 176", what="the preview video to play")
        shots("3-preview")

        # the whole clip rendered, played and downloaded
        driver.find_element(By.ID, "render").click()
        _wait(driver, "return document.getElementById('render-status').dataset.state === 'running'", 30)
        _wait(driver, "return document.getElementById('render-status').textContent.includes('frames/s')", 60,
              "progress with frames/s")
        shots("4-rendering")
        _wait(driver, "return document.getElementById('render-status').dataset.state === 'done'", 120, "the render")
        _wait(driver, "const v = document.getElementById('result-video'); return v.readyState >= 1 && "
                      "v.duration > 1.4", what="the result to play")
        duration = driver.execute_script("return document.getElementById('result-video').duration")
        assert abs(duration - FRAMES / 30) < 0.1, duration
        shots("5-rendered")
        link = driver.find_element(By.ID, "download")
        assert link.is_displayed()
        link.click()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(p.suffix == ".mp4" for p in driver.downloads.iterdir()):
            time.sleep(0.2)
        got = [p for p in driver.downloads.iterdir() if p.suffix == ".mp4"]
        assert len(got) == 1, list(driver.downloads.iterdir())
        info = probe(got[0])
        assert info["frames"] == FRAMES and info["audio"] and info["audio"][0]["codec"] == "aac"

        # a second render (another part), cancelled from the page
        driver.find_element(By.CSS_SELECTOR, '#legend tr[data-channel="2"] .swatch').click()
        driver.find_element(By.ID, "render").click()
        _wait(driver, "return document.getElementById('render-status').dataset.state === 'running'", 30)
        driver.find_element(By.ID, "cancel").click()
        _wait(driver, "return document.getElementById('render-status').dataset.state === 'cancelled'", 30,
              "the cancel")
        assert "nothing was written" in driver.find_element(By.ID, "render-status").text
        assert len(list((roots.workspace / "renders").iterdir())) == 1  # the first render only
        shots("6-cancelled")

        # a training run: its curve and its latest picture
        Select(driver.find_element(By.ID, "run")).select_by_value("folder1/run/log.jsonl")
        _wait(driver, "return document.querySelectorAll('#curves polyline.curve').length === 2", 30, "the curves")
        points = driver.execute_script(
            "return document.querySelector('#curves polyline[data-name=perceptual]').getAttribute('points')")
        assert len(points.split()) == 5
        width = cv2.imread(str(ROOT / "docs" / "pictures" / "train-vis.png")).shape[1]
        _wait(driver, "const i = document.querySelector('#vis img'); return i && i.complete && "
                      f"i.naturalWidth === {width} && i.src.includes('00000010.png')", what="the latest picture")
        driver.execute_script("document.getElementById('training').scrollIntoView()")
        shots("7-training")
    finally:
        served.close()
    assert len(shots.taken) == 7
    assert time.monotonic() - started < 180
