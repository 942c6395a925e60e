"""``omniflex chat`` driven through stdin, as a script or a pipe would."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest

from omniflex.cli.chat import ChatShell, run_chat
from omniflex.media import to_png_bytes, to_wav_bytes, video_bytes
from omniflex.model.assistant import Assistant


@pytest.fixture(scope="module")
def assistant() -> Assistant:
    return Assistant.from_pretrained("tiny")


def _chat(assistant, tmp_path, lines: list[str], **options) -> list[str]:
    out = io.StringIO()
    shell = ChatShell(assistant, tmp_path / "answers", stdout=out, max_new_tokens=8, **options)
    for line in lines:
        if not shell.handle(line):
            break
    return out.getvalue().splitlines()


def test_text_prompt_gets_an_answer_line(assistant, tmp_path) -> None:
    lines = _chat(assistant, tmp_path, ["What is two plus three?", "/quit", "never read"])
    assert len(lines) >= 1 and lines[0].startswith("assistant: ")


def test_attachments_go_with_the_next_message(assistant, tmp_path) -> None:
    image = tmp_path / "scene.png"
    image.write_bytes(to_png_bytes(np.full((80, 100, 3), 200, np.uint8)))
    audio = tmp_path / "hello.wav"
    audio.write_bytes(to_wav_bytes(np.zeros(22_050, np.float32), rate=44_100))
    video = tmp_path / "clip.mp4"
    video.write_bytes(video_bytes(np.full((4, 32, 32, 3), 90, np.uint8), 2))
    out = _chat(
        assistant, tmp_path, [f"/image {image}", f"/audio {audio}", "What is this?",
                              f"/video {video}", "/send"],
    )  # fmt: skip
    out = [line for line in out if not line.startswith("[answer cut at")]  # a trained model talks
    assert out[0] == f"[attached image {image} (64x64); it goes with your next message]"
    assert out[1] == f"[attached audio {audio} (0.5 s); it goes with your next message]"
    assert out[2].startswith("assistant: ")
    assert out[3].startswith(f"[attached video {video} (4 frames at 2 fps, resized to 64x64)")
    assert out[4].startswith("assistant: ")


def test_bad_paths_and_commands_print_an_error_and_the_chat_goes_on(assistant, tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    out = _chat(
        assistant, tmp_path,
        [f"/image {tmp_path / 'missing.png'}", f"/image {tmp_path / 'notes.txt'}", "/image",
         "/voice nobody", "/frobnicate", "/send", "hello"],
    )  # fmt: skip
    errors = [line for line in out if line.startswith("error: ")]
    assert len(errors) == 6, out
    assert "missing.png" in errors[0] and "notes.txt" in errors[1] and "nobody" in errors[3]
    # the chat went on and answered "hello" (a note follows if the answer hit the token cap)
    assert out[-1].startswith("assistant: ") or (
        out[-2].startswith("assistant: ") and out[-1].startswith("[answer cut at")
    )


def test_modes_voice_and_reset(assistant, tmp_path) -> None:
    out = _chat(assistant, tmp_path, ["/voice bram", "hello", "/text", "/reset", "/help"])
    assert out[0] == "[spoken answers in bram]" and out[1].startswith("assistant: ")
    assert "[written answers]" in out and "[new conversation]" in out
    assert any(line.strip().startswith("/audio PATH") for line in out)


def test_piped_stdin_to_a_process(tmp_path) -> None:
    code = (
        "import sys; from omniflex.cli.chat import run_chat; "
        f"sys.exit(run_chat(out={str(tmp_path)!r}, max_new_tokens=4))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], input="hello\n/quit\n", capture_output=True, text=True,
        timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("assistant: ") and "you:" not in proc.stdout


def test_run_chat_ends_at_end_of_input(tmp_path) -> None:
    out = io.StringIO()
    assert run_chat(stdin=io.StringIO("/text\n"), stdout=out, out=tmp_path) == 0
    assert out.getvalue() == "[written answers]\n"


def test_spoken_and_drawn_answers_are_saved(assistant, tmp_path) -> None:
    out = io.StringIO()
    shell = ChatShell(assistant, tmp_path / "answers", stdout=out)
    shell._save([np.zeros(8000, np.float32)] * 2, [np.zeros((64, 64, 3), np.uint8)], "cleo")
    wav, png = tmp_path / "answers" / "answer_001.wav", tmp_path / "answers" / "answer_002.png"
    assert out.getvalue().splitlines() == [
        f"[audio: {wav} (1.0 s, voice cleo)]",
        f"[image: {png}]",
    ]
    assert wav.stat().st_size > 0 and png.stat().st_size > 0
