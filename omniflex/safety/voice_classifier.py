"""Streaming output voice classifier: is the model still speaking in the session's preset voice?

The GPT-4o system card's second mitigation against unauthorised voice generation: a classifier
reads the model's audio as it streams out and stops the answer once the voice deviates from the
session's preset voice (another preset, an input or unknown voice, a pitch- or speed-altered
preset). Here:

* ``VoiceClassifier`` — a small MLP over pooled 1 s window features (``voice_features.py``) with
  one sigmoid logit per preset voice: "this window is preset *v*, unaltered". Trained by
  ``voice_train.py`` on the corpus, with every clip also passed through the shipped audio codec
  (real output is codec-decoded audio) and background noise.
* ``VoiceGuard`` — one per session. ``push(pcm)`` takes output chunks of any size; every 40 ms of
  audio (a *step*) it pools the last 1 s of frames and scores the session voice.

Decision rule (documented, calibrated on the val split):

* **Warm-up / silence.** A step is *judged* only when its 1 s window holds at least 0.3 s of
  speech (``MIN_SPEECH_FRAMES``); before that, and in pauses, chunks are allowed
  (``reason="warm-up"`` / ``"silence"``). So at most about 0.3 s of speech plays before the first
  judgement; a server that must leak nothing holds back that much audio.
* **Block.** A judged step *deviates* when the session voice's probability is below
  ``threshold``; ``patience`` consecutive deviating steps block the stream.
* **Sticky.** Once blocked, every later ``push`` returns ``allowed=False`` (reason says since
  when); a new answer needs a new guard (``reset()``).
* **Streaming equality.** Features are computed in fixed 40 ms steps with fixed shapes, so any
  chunking of the same samples gives bit-identical decisions at every step boundary. ``push``
  returns the state after the last complete step; a chunk that completes no step repeats it.

Cost: one step is a 4-frame FFT, a pooling over 100 frames and a 140->96->96->4 MLP: well under a
millisecond on one CPU thread (``evaluate_safety_classifiers`` measures it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from omniflex.common.folder import CONFIG_FILE, load_folder, save_folder
from omniflex.common.voices import PRESET_VOICE_NAMES, check_preset_voice
from omniflex.safety.voice_features import (
    FRAME_DIM,
    HOP,
    POOLED_DIM,
    SAMPLE_RATE,
    STEP_FRAMES,
    STEP_SAMPLES,
    WINDOW,
    WINDOW_FRAMES,
    frame_features,
    pool_window,
)

__all__ = [
    "SHIPPED",
    "VoiceClassifier",
    "VoiceDecision",
    "VoiceGuard",
    "load_voice_classifier",
    "save_voice_classifier",
]

SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "safety" / "voice_classifier"
KIND = "voice_classifier"


@dataclass(frozen=True)
class VoiceDecision:
    """The guard's state after a chunk.

    ``score`` is the probability that the latest judged window is the session's preset voice
    (1.0 before any judgement); ``allowed`` is False from the block onwards."""

    allowed: bool
    score: float
    voice: str
    reason: str


class VoiceClassifier(nn.Module):
    """Pooled window features ``(B, POOLED_DIM)`` -> one logit per preset voice ``(B, V)``."""

    def __init__(
        self,
        voices: tuple[str, ...] | None = None,
        hidden: int = 96,
        threshold: float = 0.5,
        patience: int = 2,
    ) -> None:
        super().__init__()
        self.voices = tuple(voices or PRESET_VOICE_NAMES)
        self.hidden, self.threshold, self.patience = hidden, float(threshold), int(patience)
        self.register_buffer("feature_mean", torch.zeros(POOLED_DIM))
        self.register_buffer("feature_std", torch.ones(POOLED_DIM))
        self.net = nn.Sequential(
            nn.Linear(POOLED_DIM, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, len(self.voices)),
        )
        self.metadata: dict[str, Any] = {}

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net((pooled - self.feature_mean) / self.feature_std)  # (B, V)

    def config_dict(self) -> dict[str, Any]:
        return {
            "voices": list(self.voices),
            "hidden": self.hidden,
            "threshold": self.threshold,
            "patience": self.patience,
        }


def save_voice_classifier(model: VoiceClassifier, directory: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (float32) into ``directory``."""
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    return save_folder(
        directory, {"kind": KIND, "config": model.config_dict(), "metadata": model.metadata}, state
    )


def load_voice_classifier(directory: str | Path = SHIPPED) -> VoiceClassifier:
    """Read a folder written by ``save_voice_classifier`` (default: the shipped one)."""
    directory = Path(directory)
    data, tensors = load_folder(
        directory,
        what="a voice classifier",
        fix=f"train one: `omniflex safety train-voice --out {directory}`",
    )
    if data.get("kind") != KIND:
        raise ValueError(f"{directory / CONFIG_FILE} holds a {data.get('kind')!r}, not a {KIND!r}")
    cfg = data["config"]
    model = VoiceClassifier(tuple(cfg["voices"]), cfg["hidden"], cfg["threshold"], cfg["patience"])
    model.load_state_dict(tensors)
    model.metadata = data.get("metadata", {})
    return model.eval()


class _StepScorer:
    """The streaming core: samples in, one logit vector ``(V,)`` (or ``None``) per 40 ms step."""

    def __init__(self, model: VoiceClassifier) -> None:
        self.model = model
        self._samples = np.zeros(WINDOW - HOP, np.float64)  # zeros before the stream starts
        self._frames = np.zeros((0, FRAME_DIM))
        self.steps = 0

    def push(self, pcm: np.ndarray) -> list[np.ndarray | None]:
        self._samples = np.concatenate([self._samples, pcm.astype(np.float64)])
        out: list[np.ndarray | None] = []
        context = WINDOW - HOP
        while len(self._samples) >= context + STEP_SAMPLES:
            block = self._samples[: context + STEP_SAMPLES]
            idx = np.arange(WINDOW)[None, :] + HOP * np.arange(STEP_FRAMES)[:, None]
            feats = frame_features(block[idx])  # (STEP_FRAMES, FRAME_DIM): fixed shape
            self._frames = np.concatenate([self._frames, feats])[-WINDOW_FRAMES:]
            self._samples = self._samples[STEP_SAMPLES:]
            self.steps += 1
            pooled = pool_window(self._frames)
            if pooled is None:
                out.append(None)
                continue
            with torch.no_grad():
                logits = self.model(torch.from_numpy(pooled)[None])[0]
            out.append(logits.numpy().astype(np.float64))
        return out


def _check_pcm(pcm: Any) -> np.ndarray:
    if isinstance(pcm, torch.Tensor):
        pcm = pcm.detach().cpu().numpy()
    if not isinstance(pcm, np.ndarray):
        raise ValueError(
            f"pcm must be a numpy array of float32 samples, got {type(pcm).__name__}; "
            "pass np.asarray(chunk, dtype=np.float32)"
        )
    if pcm.dtype != np.float32:
        raise ValueError(
            f"pcm must be float32 samples in [-1, 1] at {SAMPLE_RATE} Hz, got dtype {pcm.dtype}; "
            "convert with pcm.astype(np.float32) (int16 PCM: divide by 32768 first)"
        )
    if pcm.ndim != 1:
        raise ValueError(
            f"pcm must be mono (N,), got shape {pcm.shape}; average the channels first"
        )
    if not np.isfinite(pcm).all():
        raise ValueError(
            f"pcm holds {int((~np.isfinite(pcm)).sum())} NaN or Inf samples; "
            "the audio decoder produced invalid output — stop the stream"
        )
    return pcm


class VoiceGuard:
    """One streaming session: blocks the output once it stops sounding like ``voice``."""

    def __init__(self, voice: str, model: VoiceClassifier) -> None:
        self.voice = check_preset_voice(voice)
        if self.voice not in model.voices:
            raise ValueError(
                f"the voice classifier knows {', '.join(model.voices)}, not {voice!r}; "
                "retrain it with `omniflex safety train-voice`"
            )
        self.model = model
        self._index = model.voices.index(self.voice)
        self.reset()

    @classmethod
    def from_shipped(cls, voice: str) -> VoiceGuard:
        """A guard for ``voice`` with the classifier shipped in ``omniflex/assets/safety``."""
        return cls(voice, _shipped())

    @property
    def threshold(self) -> float:
        return self.model.threshold

    def reset(self) -> None:
        """Start a new answer: forget the audio and any block."""
        self._scorer = _StepScorer(self.model)
        self._run = 0
        self._blocked_at: float | None = None
        self._decision = VoiceDecision(True, 1.0, self.voice, "warm-up")

    def push(self, pcm: np.ndarray) -> VoiceDecision:
        """Feed the next output chunk (float32, 16 kHz, mono, any length); get the decision."""
        pcm = _check_pcm(pcm)
        first = self._scorer.steps + 1
        for step, logits in enumerate(self._scorer.push(pcm), start=first):
            self._decide(step, logits)
        return self._decision

    def _decide(self, step: int, logits: np.ndarray | None) -> None:
        if self._blocked_at is not None:
            return
        seconds = step * STEP_SAMPLES / SAMPLE_RATE  # end of this step's audio
        if logits is None:
            judged = self._decision.reason not in ("warm-up",)
            reason = "silence" if judged else "warm-up"
            self._decision = VoiceDecision(True, self._decision.score, self.voice, reason)
            return
        score = float(1.0 / (1.0 + np.exp(-logits[self._index])))
        self._run = self._run + 1 if score < self.threshold else 0
        if self._run >= self.model.patience:
            self._blocked_at = seconds
            reason = (
                f"blocked at {seconds:.2f} s: output no longer sounds like preset voice "
                f"{self.voice!r} (score {score:.3f} < {self.threshold:.3f})"
            )
            self._decision = VoiceDecision(False, score, self.voice, reason)
        else:
            self._decision = VoiceDecision(True, score, self.voice, "ok")

    @property
    def blocked(self) -> bool:
        return self._blocked_at is not None

    def step_scores(self, pcm: np.ndarray) -> np.ndarray:
        """All preset-voice probabilities per step for a whole clip, ``(steps, V)`` (NaN rows:
        not judged). Evaluation helper; uses a fresh scorer, leaves this guard untouched."""
        rows = _StepScorer(self.model).push(_check_pcm(pcm))
        out = np.full((len(rows), len(self.model.voices)), np.nan)
        for i, logits in enumerate(rows):
            if logits is not None:
                out[i] = 1.0 / (1.0 + np.exp(-logits))
        return out


_SHIPPED_MODEL: VoiceClassifier | None = None


def _shipped() -> VoiceClassifier:
    global _SHIPPED_MODEL
    if _SHIPPED_MODEL is None:
        _SHIPPED_MODEL = load_voice_classifier(SHIPPED)
    return _SHIPPED_MODEL


def first_block_step(scores: np.ndarray, threshold: float, patience: int) -> int | None:
    """The step at which the decision rule blocks a stream of one voice's ``scores`` (NaN:
    not judged, resets nothing), or ``None``. Same rule as ``VoiceGuard``; for evaluation."""
    run = 0
    for i, s in enumerate(scores):
        if np.isnan(s):
            continue
        run = run + 1 if s < threshold else 0
        if run >= patience:
            return i
    return None
