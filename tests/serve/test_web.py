"""The web playground in headless Chromium (Debian's), end to end against a live server.

Typed, picture, video and drawing turns go over REST; spoken turns come from a fake microphone
(Chromium's ``--use-file-for-fake-audio-capture``, or, to speak at a chosen moment for barge-in,
a page-side stand-in for ``getUserMedia``) over the Realtime API. Each test checks what the page
shows (turns with their modality and content, timings) and what it played (audio chunks that
started and ended on the page's audio clock), and that the page raised no error.

``OMNIFLEX_SCREENSHOTS=docs/images`` makes ``test_screenshots`` write the README's pictures.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from omniflex.serve import ServeSettings
from tests.serve.conftest import LiveServer, spoken_question, start_server, wav_bytes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian chromium is not installed (apt-get install chromium); the browser tests need it",
)
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip
SLOW = 90_000  # ms: a loaded 2-core machine runs the model and the browser side by side
SCREENSHOTS_ENV = "OMNIFLEX_SCREENSHOTS"

# A microphone the test speaks into when it chooses: getUserMedia answers with a WebAudio
# stream that is silent until fakeMic.say() plays a clip into it.
FAKE_MIC = """
(() => {
  const mic = { ctx: null, dest: null, clip: null };
  window.fakeMic = mic;
  navigator.mediaDevices.getUserMedia = async () => {
    mic.ctx = new AudioContext({ sampleRate: 24000 });
    mic.dest = mic.ctx.createMediaStreamDestination();
    return mic.dest.stream;
  };
  mic.load = async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    mic.clip = await mic.ctx.decodeAudioData(bytes.buffer);
  };
  mic.say = () => new Promise((resolve) => {  // resolves once the clip was spoken
    const src = mic.ctx.createBufferSource();
    src.buffer = mic.clip;
    src.connect(mic.dest);
    src.onended = resolve;
    src.start();
  });
  // speak over the answer as soon as the page plays it
  mic.sayWhenPlaying = () => new Promise((resolve) => {
    const poll = setInterval(() => {
      if (window.omniflexStats.playing > 0) { clearInterval(poll); mic.say(); resolve(); }
    }, 5);
  });
})();
"""


# Drops a PNG on the page as a file dragged from the desktop would be.
DROP_PICTURE = """async ([name, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type: "image/png" }));
  for (const type of ["dragenter", "dragover", "drop"]) {
    document.getElementById("log").dispatchEvent(
      new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
  }
}"""


@contextmanager
def playground(
    server: LiveServer, tmp_path: Path, *, mic_file: Path | None = None, fake_mic: bool = False
) -> Iterator[object]:
    """A fresh Chromium at 1280x900 on the server's page, ready (settings and models read)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    args = list(ARGS)
    if mic_file is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic_file}%noloop")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=args,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            page = context.new_page()
            page.set_default_timeout(SLOW)
            page.page_errors = []
            page.on("pageerror", lambda e: page.page_errors.append(str(e)))
            if fake_mic:
                page.add_init_script(FAKE_MIC)
            page.goto(server.url + "/")
            page.wait_for_function("window.omniflexStats && window.omniflexStats.ready")
            yield page
            assert not page.page_errors, page.page_errors
        finally:
            context.close()


def stats(page) -> dict:
    return page.evaluate("window.omniflexStats")


def ask(page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def wait_rest_answers(page, n: int) -> None:
    page.wait_for_function(f"window.omniflexStats.restAnswers >= {n}")


def no_errors(page) -> None:
    assert stats(page)["errors"] == [], stats(page)["errors"]
    assert page.locator("#error").is_hidden()


def png_file(path: Path) -> Path:
    """A red disc on white, 64x64, like the corpus's scenes."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(img).ellipse((12, 12, 52, 52), fill=(220, 30, 30))
    img.save(path)
    return path


def webm_clip(path: Path, seconds: float = 2.0) -> Path:
    """A WebM (VP8 + Opus) of a red square moving right, with a spoken question as its sound."""
    import av

    fps, rate = 10, 48000
    question = np.resize(spoken_question(0.0), int(seconds * 16000))  # 16 kHz
    speech = np.interp(np.arange(int(seconds * rate)) / 3, np.arange(question.size), question)
    with av.open(str(path), "w", format="webm") as out:
        video = out.add_stream("libvpx", rate=fps)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = out.add_stream("libopus", rate=rate, layout="mono")
        for i in range(int(seconds * fps)):
            pixels = np.full((64, 64, 3), 255, np.uint8)
            x = 4 + i * 2
            pixels[22:42, x : x + 20] = (220, 30, 30)
            out.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(video.encode(None))
        step = 960  # Opus takes 20 ms frames
        for at in range(0, speech.size - step + 1, step):
            block = (speech[at : at + step] * 32767).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, at
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    return path


def spoken_wav(tmp_path: Path, seconds_silence: float = 3.0) -> Path:
    path = tmp_path / "question.wav"
    path.write_bytes(wav_bytes(spoken_question(seconds_silence)))
    return path


# ---------------------------------------------------------------------------- REST turns
def test_typed_question_streams_a_text_answer(live, tmp_path) -> None:
    with playground(live, tmp_path) as page:
        assert page.title() == "omniflex playground"
        assert page.text_content("#conn") == "online"
        assert page.text_content("#model") == live.state.model_name
        voices = page.eval_on_selector_all("#voice option", "os => os.map(o => o.value)")
        assert {"aria", "bram", "cleo", "dax", "alloy"} <= set(voices)  # presets and OpenAI's
        ask(page, "What is two plus three?")
        wait_rest_answers(page, 1)
        user, answer = page.locator(".turn.user").last, page.locator(".turn.assistant").last
        assert user.get_attribute("data-modality") == "typed"
        assert user.locator(".text").text_content() == "What is two plus three?"
        assert answer.get_attribute("data-modality") == "text"
        assert answer.locator(".tag").text_content() == "omniflex · text"
        assert answer.locator(".text").text_content().strip()
        meta = answer.locator(".meta").text_content()
        assert re.search(r"request → first token \d+ ms · \d+ tok · [\d.]+ tok/s", meta), meta
        assert page.input_value("#prompt") == ""
        assert stats(page)["state"] == "idle"
        # the controls go into the request: temperature, and a cap the answer runs into
        page.fill("#temperature", "0.7")
        page.fill("#max-tokens", "2")
        with page.expect_request("**/v1/chat/completions") as request:
            ask(page, "What is two plus three?")
        body = request.value.post_data_json
        assert body["temperature"] == 0.7 and body["max_completion_tokens"] == 2
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]  # history
        wait_rest_answers(page, 2)
        capped = page.locator(".turn.assistant").last
        assert capped.get_attribute("data-flag") == "cut at max length"
        no_errors(page)
        page.click("#clear")
        assert page.locator(".turn").count() == 0 and page.locator("#empty").is_visible()


def test_typed_question_answered_as_speech_plays_audio(live, tmp_path) -> None:
    with playground(live, tmp_path) as page:
        page.select_option("#answer", "speech")
        page.select_option("#voice", "alloy")  # OpenAI's name: the server speaks it as aria
        ask(page, "What colour is the sky on a clear day?")
        wait_rest_answers(page, 1)
        page.wait_for_function("window.omniflexStats.played > 0")  # it played, not just arrived
        s = stats(page)
        assert s["restAudioSeconds"] > 0.5
        answer = page.locator(".turn.assistant").last
        assert answer.get_attribute("data-modality") == "speech"
        assert answer.locator(".transcript").text_content().strip()
        assert re.search(r"request → first audio \d+ ms", answer.locator(".meta").text_content())
        link = answer.locator("a.download")
        assert link.get_attribute("download").endswith(".wav")
        assert link.get_attribute("href").startswith("blob:")
        no_errors(page)


def test_picture_with_a_question_gets_an_answer(live, tmp_path) -> None:
    with playground(live, tmp_path) as page:
        page.set_input_files("#attach", str(png_file(tmp_path / "disc.png")))
        page.wait_for_selector(".chip img")  # the preview
        assert "disc.png" in page.text_content(".chip figcaption")
        ask(page, "What shape is this?")
        wait_rest_answers(page, 1)
        user, answer = page.locator(".turn.user").last, page.locator(".turn.assistant").last
        assert user.get_attribute("data-modality") == "typed + picture"
        assert user.locator("img.thumb").evaluate("img => img.naturalWidth") > 0
        assert answer.locator(".text").text_content().strip()
        assert page.locator(".chip").count() == 0  # sent: the composer is empty again
        # drag and drop attaches too; a chip's button takes it off again
        picture = base64.b64encode((tmp_path / "disc.png").read_bytes()).decode()
        page.evaluate(DROP_PICTURE, ["dropped.png", picture])
        page.wait_for_selector(".chip img")
        assert page.locator("#drop").is_hidden()
        page.click("[aria-label='Remove dropped.png']")
        assert page.locator(".chip").count() == 0
        no_errors(page)


def test_video_is_sent_as_frames_and_sound(live, tmp_path) -> None:
    with playground(live, tmp_path) as page:
        page.set_input_files("#attach", str(webm_clip(tmp_path / "square.webm")))
        page.wait_for_selector(".chip video")
        assert "2 frames + sound" in page.text_content(".chip figcaption")
        ask(page, "What happens in this video?")
        wait_rest_answers(page, 1)
        user, answer = page.locator(".turn.user").last, page.locator(".turn.assistant").last
        assert user.get_attribute("data-modality") == "typed + video"
        assert re.match(
            r"2 frames and [\d.]+ s of its sound sent", user.locator(".note").text_content()
        )
        assert answer.locator(".text").text_content().strip()
        no_errors(page)


def test_draw_request_shows_a_picture(live, tmp_path) -> None:
    with playground(live, tmp_path) as page:
        ask(page, "Draw a red circle.")
        page.wait_for_selector("img.drawn")
        answer = page.locator(".turn.assistant").last
        assert answer.get_attribute("data-modality") == "picture"
        img = answer.locator("img.drawn")
        page.wait_for_function("document.querySelector('img.drawn').complete")
        assert img.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [64, 64]
        link = answer.locator("a.download")
        assert link.get_attribute("href").startswith("data:image/png;base64,")
        assert link.get_attribute("download").endswith(".png")
        assert re.search(r"request → picture \d+ ms", answer.locator(".meta").text_content())
        assert stats(page)["pictures"] == 1
        no_errors(page)


# ---------------------------------------------------------------------------- spoken turns
def test_spoken_question_plays_audio_with_transcript(live, tmp_path) -> None:
    with playground(live, tmp_path, mic_file=spoken_wav(tmp_path)) as page:
        page.click("#voice-toggle")
        page.wait_for_function(
            "window.omniflexStats.responses > 0 && window.omniflexStats.played > 0"
        )
        s = stats(page)
        assert s["speechStopped"] >= 1 and s["transcript"].strip()
        assert s["audioSeconds"] > 0.2 and s["audioChunks"] > 0
        assert "voice on" in page.text_content("#conn")
        user = page.locator(".turn.user").first
        assert user.get_attribute("data-modality") == "spoken"
        assert re.match(r"[\d.]+ s of speech", user.locator(".status").text_content())
        answer = page.locator(".turn.assistant").first
        assert answer.get_attribute("data-modality") == "speech"
        assert answer.locator(".transcript").text_content().strip()
        meta = answer.locator(".meta").text_content()
        assert re.search(r"speech end → first audio \d+ ms · \d+ tok · [\d.]+ tok/s", meta), meta
        latency = next(x["ms"] for x in s["latencies"] if x["kind"] == "speech")
        assert latency > 0
        assert page.locator("#mic option").count() >= 2  # the default and the fake devices
        no_errors(page)


def test_push_to_talk_holding_space(live, tmp_path) -> None:
    clip = base64.b64encode(wav_bytes(spoken_question(0.2)[3200:])).decode()
    with playground(live, tmp_path, fake_mic=True) as page:
        page.keyboard.down("Space")  # the first press starts voice, turn detection off
        page.wait_for_function(
            "window.fakeMic.dest && window.omniflexStats.state === 'hearing you'"
        )
        page.wait_for_function("document.getElementById('conn').textContent.includes('voice on')")
        assert page.input_value("#mode") == "ptt"
        assert page.get_attribute("#talk", "aria-pressed") == "true"
        page.evaluate("b64 => window.fakeMic.load(b64)", clip)
        page.evaluate("window.fakeMic.say()")
        page.keyboard.up("Space")  # commit and ask for the answer
        page.wait_for_function("window.omniflexStats.responses > 0")
        s = stats(page)
        assert s["speechStarted"] == 0  # no server VAD: letting go of Space ended the turn
        user = page.locator(".turn.user").first
        assert user.get_attribute("data-modality") == "spoken"
        assert float(user.locator(".status").text_content().split()[0]) > 1.0
        answer = page.locator(".turn.assistant").first
        assert re.search(r"speech end → first audio \d+ ms", answer.locator(".meta").text_content())
        no_errors(page)


@pytest.fixture(scope="module")
def long_answers(base_assistant) -> Iterator[LiveServer]:
    """A server whose spoken answers last 4 s: long enough to speak over."""
    from omniflex.model.answer_shape import AnswerShape

    assistant = base_assistant.with_answer_shape(AnswerShape(chunks=4, text_tokens=4, frames=25))
    settings = ServeSettings(api_key=None, warmup=False, voice_guard=False,
                             max_body_bytes=2_000_000, max_event_bytes=1_000_000)  # fmt: skip
    server = start_server(assistant, settings)
    yield server
    server.stop()


def test_barge_in_stops_playback(long_answers, tmp_path) -> None:
    clip = base64.b64encode(wav_bytes(spoken_question(1.0)[3200:])).decode()
    with playground(long_answers, tmp_path, fake_mic=True) as page:
        page.click("#voice-toggle")
        page.wait_for_function("window.fakeMic.dest && window.omniflexStats.state === 'listening'")
        page.evaluate("b64 => window.fakeMic.load(b64)", clip)
        # a spoken answer over the Realtime API, spoken over as soon as it plays
        page.evaluate("window.fakeMic.say()")
        page.evaluate("window.fakeMic.sayWhenPlaying()")
        page.wait_for_function("window.omniflexStats.bargeIns >= 1")
        cut = stats(page)["lastBargeIn"]
        assert cut["why"] == "speech"
        assert cut["playingAfter"] == 0 and cut["cutSeconds"] > 0  # queued audio was dropped
        assert 0 < cut["heardMs"] < 3000  # of a 4 s answer
        page.wait_for_function("window.omniflexStats.truncated >= 1")  # the server cut it there
        first = page.locator(".turn.assistant").first
        assert first.get_attribute("data-flag") == "interrupted"
        # a spoken answer to a typed question (chat completions), spoken over the same way
        page.wait_for_function("window.omniflexStats.state === 'listening'")
        page.select_option("#answer", "speech")
        ask(page, "What colour is grass?")
        page.evaluate("window.fakeMic.sayWhenPlaying()")
        page.wait_for_function("window.omniflexStats.bargeIns >= 2")
        cut = stats(page)["lastBargeIn"]
        assert cut["playingAfter"] == 0 and cut["cutSeconds"] > 0
        typed = page.locator(".turn.assistant", has_text="chat completions").first
        assert typed.get_attribute("data-flag") == "interrupted"
        no_errors(page)


# ---------------------------------------------------------------------------- key, layout
def test_asks_for_a_key_when_the_server_needs_one(speaking_assistant, tmp_path) -> None:
    settings = ServeSettings(api_key="open-sesame", warmup=False, voice_guard=False)
    server = start_server(speaking_assistant, settings)
    try:
        with playground(server, tmp_path) as page:
            page.wait_for_selector("#key-form", state="visible")
            assert page.text_content("#conn") == "needs API key"
            page.fill("#key", "wrong")
            page.click("#key-form button")
            page.wait_for_selector("#error", state="visible")
            assert "API key" in page.text_content("#error-text")  # the server's own words
            page.fill("#key", "open-sesame")
            page.click("#key-form button")
            page.wait_for_function("document.getElementById('conn').textContent === 'online'")
            assert page.locator("#key-form").is_hidden()
            ask(page, "What is two plus three?")
            wait_rest_answers(page, 1)
            assert page.locator(".turn.assistant .text").last.text_content().strip()
    finally:
        server.stop()


def test_screenshots(live, tmp_path) -> None:
    """A real session, pictured at laptop and phone widths (no sideways scrolling on a phone)."""
    out = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    with playground(live, tmp_path, mic_file=spoken_wav(tmp_path, 1.0)) as page:
        ask(page, "What is two plus three?")
        wait_rest_answers(page, 1)
        page.set_input_files("#attach", str(png_file(tmp_path / "disc.png")))
        page.wait_for_selector(".chip img")
        ask(page, "What colour is the shape?")
        wait_rest_answers(page, 2)
        ask(page, "Draw a red circle.")
        page.wait_for_selector("img.drawn")
        page.wait_for_function("document.querySelector('img.drawn').complete")
        page.click("#voice-toggle")
        page.wait_for_function("window.omniflexStats.responses > 0")
        page.wait_for_function("window.omniflexStats.state === 'listening'")
        no_errors(page)
        page.screenshot(path=str(out / "playground-desktop.png"))
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_function("!document.getElementById('settings').open")  # folded on a phone
        wide = page.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390, f"the page is {wide} px wide at phone width"
        for control in ("#prompt", "#send", "#talk", "#attach + .attach"):
            box = page.locator(control).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, control
        page.screenshot(path=str(out / "playground-phone.png"))
    for name in ("playground-desktop.png", "playground-phone.png"):
        assert (out / name).stat().st_size > 10_000
