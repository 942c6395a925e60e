"""The voice web page in headless Chromium: a fake microphone plays a spoken question; the page
must show a transcript and receive (and schedule) the spoken reply."""

from __future__ import annotations

import shutil

import pytest

from tests.serve.conftest import spoken_question, wav_bytes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed "
                    "(apt-get install chromium); the browser test needs it")  # fmt: skip
def test_page_voice_turn(live, tmp_path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    question = tmp_path / "question.wav"
    question.write_bytes(wav_bytes(spoken_question(3.0)))
    args = [
        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={question}%noloop",
        "--autoplay-policy=no-user-gesture-required",
    ]  # fmt: skip
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=args
        )
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(live.url + "/")
            assert page.title() == "omniflex voice"
            page.click("#start")
            page.wait_for_function(
                "window.omniflexStats.responses > 0 && window.omniflexStats.audioChunks > 0",
                timeout=30_000,
            )  # fmt: skip
            stats = page.evaluate("window.omniflexStats")
            assert stats["speechStopped"] >= 1 and stats["transcript"]
            assert stats["audioSeconds"] > 0.2
            assert page.locator(".turn.assistant").count() >= 1
            assert not errors, errors
        finally:
            context.close()
