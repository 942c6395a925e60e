"""A live server per test module: uvicorn in a thread on a free loopback port, driven by the
official ``openai`` client. The model is the shipped placeholder (float32 for speed), wrapped in
an ``AnswerShape`` so that spoken answers really stream audio."""

from __future__ import annotations

import io
import socket
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from omniflex.serve import ServeSettings

torch.set_num_threads(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:PORT
    server: object
    thread: threading.Thread
    app: object

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/v1"

    @property
    def state(self):
        return self.app.state.server

    def client(self, api_key: str = "unused", **kwargs: object):
        from openai import OpenAI

        return OpenAI(api_key=api_key, base_url=self.base_url, websocket_base_url=self.ws_url,
                      max_retries=0, timeout=30, **kwargs)  # fmt: skip

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_server(assistant: object, settings: ServeSettings) -> LiveServer:
    from omniflex.serve.server import make_server

    settings = replace(settings, port=free_port())
    server = make_server(settings, assistant, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return LiveServer(f"http://127.0.0.1:{settings.port}", server, thread, server.config.app)


@pytest.fixture(scope="session")
def base_assistant():
    from omniflex.model.assistant import Assistant

    # With batch decoding on (omniflex serve --batch-decoding), so the serve suite exercises it.
    return Assistant.from_pretrained("tiny", precision="float32", batch_decoding=True)


@pytest.fixture(scope="session")
def speaking_assistant(base_assistant):
    from omniflex.model.answer_shape import AnswerShape

    return base_assistant.with_answer_shape(AnswerShape(chunks=3, text_tokens=4, frames=10))


@pytest.fixture(scope="module")
def live(speaking_assistant) -> Iterator[LiveServer]:
    settings = ServeSettings(api_key=None, max_sessions=4, warmup=True, voice_guard=False,
                             max_body_bytes=2_000_000, max_event_bytes=1_000_000)  # fmt: skip
    server = start_server(speaking_assistant, settings)
    yield server
    server.stop()


def spoken_question(seconds_silence: float = 0.7) -> np.ndarray:
    """A held-out-voice spoken question from the corpus's test split (16 kHz), with silence
    after it; a synthetic vowel-like tone if the corpus is not built."""
    from omniflex.serve.bench import load_questions

    questions = load_questions("data/tiny", limit=1)
    x = questions[0].samples
    return np.concatenate([np.zeros(3200, np.float32), x,
                           np.zeros(int(16000 * seconds_silence), np.float32)])  # fmt: skip


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()
