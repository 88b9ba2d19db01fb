"""The learner's page end to end in a real headless Chromium: a fake microphone fed by a
real speechocean762 clip records (MediaRecorder, WebM/Opus), the page uploads it to the
live service with the tiny model, and shows the sentence with every word coloured, its
phones under it and the sentence scores as bars.

Skipped when Debian's chromium and chromium-driver (installed by .ci/run) or the corpus
at ../shared/so762 are missing. Selenium is given the driver's path, so Selenium Manager
(which would download a driver) never runs."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")

from serve_helpers import LiveServer  # noqa: E402

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SO762 = Path(__file__).resolve().parents[2] / "shared" / "so762"
CLIP_ID, CLIP_TEXT = "000030024", "KATE LOVES CHINA"  # test split, 2.6 s
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--no-default-browser-check", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture
def fake_microphone(tmp_path) -> Path:
    """The clip as 16-bit PCM WAV: Chromium's fake capture reads that (24-bit records silence)."""
    import soundfile as sf

    clips = list((SO762 / "WAVE").glob(f"*/{CLIP_ID}.*"))
    if not clips:
        pytest.skip("speechocean762 is not at ../shared/so762")
    from apa.data.audio import load_audio

    path = tmp_path / "microphone.wav"
    sf.write(str(path), load_audio(clips[0]), 16000, subtype="PCM_16")
    return path


@pytest.fixture
def browser(fake_microphone, tmp_path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    for flag in FLAGS + [f"--user-data-dir={profile}", f"--use-file-for-fake-audio-capture={fake_microphone}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_record_score_and_see_the_coloured_words(browser, tiny_model):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from apa.serve import create_app

    model, processor = tiny_model
    app = create_app(model, processor, model_name="tiny", max_wait_ms=5)
    with LiveServer(app) as live:
        browser.get(live.url + "/")
        browser.find_element(By.ID, "text").send_keys("Kate loves China.")
        browser.find_element(By.ID, "record").click()
        time.sleep(3.0)  # the fake microphone plays the clip (2.6 s)
        browser.find_element(By.ID, "record").click()
        WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-recorded"))
        assert int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-recorded")) > 1000  # bytes of WebM
        browser.find_element(By.ID, "score").click()
        WebDriverWait(browser, 60).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-scored")
            or "error" in (d.find_element(By.ID, "status").get_attribute("class") or ""))
        status = browser.find_element(By.ID, "status").text
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-scored") == "yes", status
        words = browser.find_elements(By.CSS_SELECTOR, "#words .word")
        assert [w.get_attribute("data-word") for w in words] == CLIP_TEXT.split()
        for word in words:
            level = set(word.get_attribute("class").split()) & {"good", "fair", "weak"}
            assert len(level) == 1  # coloured by its accuracy
            assert 0 <= float(word.get_attribute("data-accuracy")) <= 10
            assert word.find_elements(By.CSS_SELECTOR, ".phones .phone")  # its phones under it
        bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
        assert {b.get_attribute("data-aspect") for b in bars} == {"accuracy", "fluency", "prosody", "completeness",
                                                                   "total"}
        assert "kate loves china" in status
