"""The learner's page end to end in a real headless Chromium: a fake microphone fed by a
real speechocean762 clip records (MediaRecorder, WebM/Opus), the page uploads it to the
live service with the tiny model, and shows the sentence with every word marked, its
phones under it and the sentence scores with their scale. Then the page as a teacher
(issue 17), on an uploaded clip and a result built here (with the word time stamps
``start`` / ``end`` the alignment gives, one of them null): the practice list weakest
first, sounds in IPA and "as in" words, the model pronunciation (``GET /speak``) and the
learner's own word cut from the recording both played, no serious or critical axe-core
violation at desktop and phone widths, the result scrolled into view on a phone and
cleared by a new attempt or a failed one.

Skipped when Debian's chromium and chromium-driver (installed by .ci/run), the corpus at
../shared/so762 (first test) or axe-core (``.cache/axe``, installed by .ci/run with npm;
the accessibility check only) are missing. Selenium is given the driver's path, so
Selenium Manager (which would download a driver) never runs. With
``APA_PAGE_SCREENSHOTS=DIR`` the desktop and phone screenshots are written there
(docs/ holds the ones made so)."""

from __future__ import annotations

import json
import os
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
AXE = Path(__file__).resolve().parents[1] / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
CLIP_ID, CLIP_TEXT = "000030024", "KATE LOVES CHINA"  # test split, 2.6 s
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--no-default-browser-check", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
         "--autoplay-policy=no-user-gesture-required", "--window-size=1200,1000"]


def _chromium(tmp_path, extra=()):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    for flag in FLAGS + [f"--user-data-dir={profile}", *extra]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options), profile


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
    driver, profile = _chromium(tmp_path, [f"--use-file-for-fake-audio-capture={fake_microphone}"])
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
            assert len(level) == 1  # marked by its accuracy, in colour and in words
            assert word.find_element(By.CSS_SELECTOR, ".level").text in ("\u2713 good", "~ fair", "\u2717 practise")
            assert 0 <= float(word.get_attribute("data-accuracy")) <= 10
            assert word.find_element(By.CSS_SELECTOR, ".score").text.endswith("/10")
            assert word.find_elements(By.CSS_SELECTOR, ".phones .phone")  # its phones under it
        bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
        assert {b.get_attribute("data-aspect") for b in bars} == {"accuracy", "fluency", "prosody", "completeness",
                                                                   "total"}
        assert "kate loves china" in status


# A result as POST /score gives it, with the word time stamps of the acoustic alignment
# (CALL's alignment failed: null). Scores chosen so that the practice list is BEAR, then CALL.
def _aspect(score):
    return {"score": score, "expected": float(score)}


def _word(text, phones, accuracy, phone_scores, start, end):
    return {"word": text, "phones": phones, "guessed": False, "start": start, "end": end,
            "scores": {"accuracy": _aspect(accuracy), "stress": _aspect(10), "total": _aspect(accuracy)},
            "phone_scores": [{"phone": p, **_aspect(s)} for p, s in zip(phones, phone_scores)]}


FAKE_RESULT = {
    "text": "WE CALL IT BEAR", "input_text": "We call it bear.", "task": "multi", "decoding": "constrained",
    "sentence": {"accuracy": _aspect(7), "fluency": _aspect(8), "prosody": _aspect(6), "completeness": _aspect(10),
                 "total": _aspect(7)},
    "words": [_word("WE", ["W", "IY1"], 9, [9, 9], 0.1, 0.3), _word("CALL", ["K", "AO1", "L"], 6, [8, 5, 7], None, None),
              _word("IT", ["IH1", "T"], 8, [8, 9], 0.6, 0.75), _word("BEAR", ["B", "EH1", "R"], 3, [8, 2, 4], 0.8, 1.2)],
    "practice": {"threshold": 8.0,
                 "words": [{"index": 3, "word": "BEAR", **_aspect(3)}, {"index": 1, "word": "CALL", **_aspect(6)}],
                 "phones": [{"word_index": 3, "word": "BEAR", "phone_index": 1, "phone": "EH1", **_aspect(2)},
                            {"word_index": 3, "word": "BEAR", "phone_index": 2, "phone": "R", **_aspect(4)},
                            {"word_index": 1, "word": "CALL", "phone_index": 1, "phone": "AO1", **_aspect(5)},
                            {"word_index": 1, "word": "CALL", "phone_index": 2, "phone": "L", **_aspect(7)}]},
    "problems": []}

# Answers POST /score in the page with ``window.fakeAnswer`` (status, body); the rest goes to the server.
FAKE_FETCH = """
const realFetch = window.fetch.bind(window);
window.fetch = (url, options) => String(url).startsWith("/score")
  ? Promise.resolve(new Response(JSON.stringify(window.fakeAnswer.body),
      {status: window.fakeAnswer.status, headers: {"Content-Type": "application/json"}}))
  : realFetch(url, options);
"""


def _axe_violations(driver) -> list[str]:
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    found = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa', 'best-practice']}})"
        ".then((r) => done(r.violations.map((v) => [v.id, v.impact, v.nodes.length])), (e) => done(String(e)));")
    assert isinstance(found, list), found
    return [f"{rule} ({impact}, {nodes} nodes)" for rule, impact, nodes in found if impact in ("serious", "critical")]


def test_the_page_teaches_and_everyone_can_read_it(tiny_processor, tmp_path, make_sine):
    pytest.importorskip("espeakng_loader")
    import soundfile as sf
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from apa.serve import create_app
    from serve_helpers import FakeModel

    clip = tmp_path / "reading.wav"
    sf.write(str(clip), make_sine(1.5), 16000, subtype="PCM_16")
    shots = os.environ.get("APA_PAGE_SCREENSHOTS")
    app = create_app(None, tiny_processor, model_name="fake", score_fn=FakeModel(calls_per_word=1), max_wait_ms=1)
    driver, profile = _chromium(tmp_path)
    try:
        with LiveServer(app) as live:
            for width, height, name in ((1200, 1000, "desktop"), (390, 844, "phone")):
                driver.set_window_size(width, height)
                driver.get(live.url + "/")
                body = driver.find_element(By.TAG_NAME, "body")
                driver.execute_script(FAKE_FETCH + "window.fakeAnswer = {status: 200, body: %s};"
                                      % json.dumps(FAKE_RESULT))
                driver.find_element(By.ID, "examples").send_keys("We call it bear.")
                driver.find_element(By.ID, "file").send_keys(str(clip))
                hear = driver.find_element(By.ID, "hear-sentence")
                hear.click()  # the sentence said by eSpeak NG, from the server
                WebDriverWait(driver, 20).until(lambda d: hear.get_attribute("data-played") == "yes")
                driver.find_element(By.ID, "score").click()
                WebDriverWait(driver, 20).until(lambda d: body.get_attribute("data-scored") == "yes")

                items = driver.find_elements(By.CSS_SELECTOR, "#practice li")
                assert [i.get_attribute("data-word") for i in items] == ["BEAR", "CALL"]  # weakest first
                assert "3/10" in items[0].text and "\u2717 practise" in items[0].text
                assert "/\u025b/ e as in \u201cbed\u201d (2/10)" in items[0].text  # EH1, not ARPAbet
                assert "AO1" not in driver.find_element(By.ID, "result").text
                model_voice = items[0].find_element(By.CSS_SELECTOR, "button.model-voice")
                own_voice = items[0].find_element(By.CSS_SELECTOR, "button.own-voice")
                model_voice.click()
                own_voice.click()  # BEAR cut from the upload at 0.8-1.2 s, by Web Audio
                WebDriverWait(driver, 20).until(lambda d: model_voice.get_attribute("data-played") == "yes"
                                                and own_voice.get_attribute("data-played") == "yes")
                assert not items[1].find_elements(By.CSS_SELECTOR, "button.own-voice")  # no timing: a note instead
                assert "needs its timing" in items[1].text
                bars = driver.find_elements(By.CSS_SELECTOR, "#bars .bar")
                assert [b.find_element(By.CSS_SELECTOR, ".value").text for b in bars] == ["7/10", "8/10", "6/10",
                                                                                           "10/10", "7/10"]
                assert "rhythm, stress and intonation" in bars[2].text
                assert _axe_violations(driver) == [] if AXE.exists() else True
                if name == "phone":  # the result is brought up, and nothing is wider than the screen
                    top = driver.execute_script("return document.getElementById('result').getBoundingClientRect().top")
                    assert driver.execute_script("return window.scrollY") > 0 and abs(top) < 40, top
                    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
                if shots:  # the result as the learner first sees it: scale, practice list, buttons
                    driver.save_screenshot(str(Path(shots) / f"page-{name}.png"))

                # a new attempt clears the old result; a failed one leaves none behind
                driver.find_element(By.ID, "text").send_keys(" Again")
                assert not driver.find_element(By.ID, "result").is_displayed()
                driver.execute_script("window.fakeAnswer = {status: 422, body: {error: 'is silent', code: 'audio_silent'}};")
                driver.find_element(By.ID, "score").click()
                WebDriverWait(driver, 20).until(lambda d: "is silent" in d.find_element(By.ID, "status").text)
                assert not driver.find_element(By.ID, "result").is_displayed()
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    if not AXE.exists():
        pytest.skip("the page works; the accessibility check needs axe-core (npm install --prefix .cache/axe "
                    "axe-core@4.14.1, done by .ci/run)")
