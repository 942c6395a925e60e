"""An independent speech judge: a small CTC recogniser that scores what the omni model says.

Every spoken output of the model under test (TTS, spoken answers) is scored by transcribing it
and comparing the words with what it was asked to say. The model must never transcribe its own
speech for a score, so the judge is a separate network, trained once on its own data and shipped
in ``omniflex/assets/speech_judge/`` (``train_speech_judge(out)``), like the scene judge. The
server hears users with it too: each spoken request's transcript is moderated before the model
answers (``omniflex.serve.guard``), which is why it lives in ``safety``, below both the server
and the evaluations.

What it hears in training is what the model will be judged on:

* **Texts**: grammar sentences of the training split (``omniflex.data.grammar``) and the corpus's
  own answer sentences (number phrases, fact answers, refusals), taken from
  ``make_sample(task, "train", i, media=False)``; half are spoken in their written form
  (capitals, punctuation: espeak-ng's prosody follows them), half in lower case.
* **Voices**: the input voices and the model's preset voices; the held-out voices never
  (``VAL_VOICES`` pick the checkpoint, ``TEST_VOICES`` give the shipped error rates).
* **Conditions**: a share clean, a share through ``speech.augment`` (speed, reverberation,
  noise), a share through the shipped audio codec (the model's speech comes out of it), and a few
  silent or noise-only clips whose transcript is empty. At training time each batch is further
  warped along the mel axis (a vocal-tract-length perturbation: unseen voices differ from the
  training ones mostly there) and masked in time and frequency (SpecAugment).

The network: 80-band log-mel frames (25 ms window, 10 ms hop), normalised per utterance; two
strided 1-D convolutions (x4 in time, 25 frames a second); a few Conformer-style blocks (self
attention, depthwise convolution, feed-forward); and a CTC head over ``a-z``, space and the
apostrophe that emits two CTC frames per encoder frame, because espeak-ng's fast voices say up to
20 characters a second and CTC needs a frame per character plus a blank between doubled letters.

Decoding is greedy; then each decoded word outside the judge's closed vocabulary (the grammar's
words and every word of its training texts) is snapped to the vocabulary word it sounds like, or
else to the one it is spelled like (``snap``). A character CTC trained for minutes hears well but
spells English phonetically ("fone", "hi", "sinema"): such words are several letters from the
right one but no phoneme from it, so snapping compares espeak-ng's phonemes first (within a third
of their number of edits), then letters (within a third of the word's length); a word with
nothing that close is kept, so a wrong word stays wrong. Both the raw and the snapped word error
rates are in the shipped metadata. Inference runs one clip at a time in float32: the same audio
always gives the same transcript, whatever else is judged with it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import multiprocessing
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from omniflex.common.files import atomic_path
from omniflex.common.folder import load_folder, save_folder
from omniflex.common.voices import (
    INPUT_VOICES,
    PRESET_VOICES,
    TEST_VOICES,
    VAL_VOICES,
    Voice,
    voice,
)
from omniflex.data.grammar import covering_sentences, grammar_words, sample_sentence, written
from omniflex.data.speech import EspeakMissingError, augment, synthesize
from omniflex.data.tasks import make_sample, number_words
from omniflex.media import resample
from omniflex.media.audio import SAMPLE_RATE
from omniflex.model.mel_augment import warp_and_mask
from omniflex.tokenizers.base import load_tokenizer
from omniflex.train.schedule import CosineSchedule

__all__ = [
    "ALPHABET",
    "SPEECH_JUDGE_ASSETS",
    "SpeechJudge",
    "SpeechJudgeConfig",
    "judge_text",
    "judge_wer",
    "train_speech_judge",
]

SPEECH_JUDGE_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "speech_judge"
ALPHABET = " abcdefghijklmnopqrstuvwxyz'"  # CTC class i + 1 is ALPHABET[i]; class 0 is the blank
_CHAR_ID = {c: i + 1 for i, c in enumerate(ALPHABET)}
RETRAIN = (
    'python -c "from omniflex.safety.speech_judge import train_speech_judge; '
    "train_speech_judge('omniflex/assets/speech_judge')\""
)

# Texts from these corpus tasks: every answer the model speaks, and the questions around them.
_CORPUS_TASKS = (
    "spoken_qa", "text_chat", "imitate", "tts", "conversation", "asr", "vqa", "speaker_id",
    "trait_ungrounded", "trait_hedge", "disallowed", "benign",
)  # fmt: skip
_ANSWER_TASKS = ("spoken_qa", "conversation", "imitate", "text_chat")  # answers the model says
_MAX_WORDS = 30  # longer texts are split into sentences: clips stay under ~12 s
_TRAIN_STREAM, _VAL_STREAM, _TEST_STREAM = 0x5_9EEC, 0x5_9EED, 0x5_9EEE
_DATA_VERSION = 1  # bump when the way clips are rendered changes: the cache key includes it


@dataclass(frozen=True)
class SpeechJudgeConfig:
    """Front end (``n_mels`` bands of ``win``-sample windows every ``hop`` samples, then stride-2
    convolutions down to one encoder frame per ``time_reduction`` of them), encoder (``layers``
    blocks of width ``dim``) and ``upsample`` CTC frames per encoder frame."""

    n_mels: int = 80
    n_fft: int = 400
    win: int = 400
    hop: int = 160
    dim: int = 192
    layers: int = 6
    heads: int = 4
    ffn_mult: int = 4
    conv_kernel: int = 15
    time_reduction: int = 8  # 12.5 encoder frames a second: half the cost of 25, as accurate
    upsample: int = 4  # 50 CTC frames a second: room for 20 characters and their blanks
    dropout: float = 0.0  # a short run on varied data underfits: dropout only slows it

    def __post_init__(self) -> None:
        sizes = ("n_mels", "n_fft", "win", "hop", "dim", "layers", "heads", "ffn_mult",
                 "conv_kernel", "upsample")  # fmt: skip
        for name in sizes:
            if getattr(self, name) < 1:
                raise ValueError(
                    f"SpeechJudgeConfig.{name} must be >= 1, got {getattr(self, name)}"
                )
        if self.dim % self.heads:
            raise ValueError(
                f"SpeechJudgeConfig.dim ({self.dim}) must be a multiple of heads ({self.heads})"
            )
        if self.time_reduction < 2 or self.time_reduction & (self.time_reduction - 1):
            raise ValueError(
                f"SpeechJudgeConfig.time_reduction must be a power of two >= 2, got "
                f"{self.time_reduction}"
            )
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"SpeechJudgeConfig.conv_kernel must be odd, got {self.conv_kernel}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"SpeechJudgeConfig.dropout must be in [0, 1), got {self.dropout}")


def judge_text(text: str) -> str:
    """The judge's form of a text: lower case, ``a-z``, ``'`` and single spaces; numerals 0-99
    spelled out as the corpus writes them; every other character a word break."""
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"\b\d{1,2}\b", lambda m: f" {number_words(int(m.group()))} ", text)
    text = re.sub(r"[^a-z' ]+", " ", text)
    words = (w.strip("'") for w in text.split())  # quotes, not apostrophes
    return " ".join(w for w in words if w)


# ----------------------------------------------------------------------------- the network
class LogMel(nn.Module):
    """Samples ``(T,)`` at 16 kHz -> log-mel frames ``(1 + T // hop, n_mels)`` (power, natural
    log, floored 80 dB below the clip's peak so digital silence and faint noise look alike)."""

    def __init__(self, config: SpeechJudgeConfig) -> None:
        super().__init__()
        import librosa

        self.config = config
        mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=config.n_fft, n_mels=config.n_mels)
        self.register_buffer("fb", torch.from_numpy(mel).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(config.win), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        c = self.config
        spec = (
            torch.stft(
                audio,
                c.n_fft,
                c.hop,
                c.win,
                self.window,
                center=True,
                pad_mode="constant",
                return_complex=True,
            )
            .abs()
            .square()
        )
        logmel = torch.log((self.fb @ spec).clamp_min(1e-10)).T  # (F, n_mels)
        return torch.maximum(logmel, logmel.max() - 18.4)  # 80 dB of power


def _normalise(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per utterance: subtract each band's mean, divide by the overall standard deviation
    (valid frames only); padding becomes 0. ``x (B, T, n_mels)``, ``mask (B, T)`` bool."""
    m = mask[..., None].float()
    n = m.sum(1, keepdim=True).clamp_min(1)  # (B, 1, 1)
    mean = (x * m).sum(1, keepdim=True) / n  # (B, 1, n_mels)
    centred = (x - mean) * m
    std = (centred.square().sum((1, 2), keepdim=True) / (n * x.shape[-1])).sqrt()
    return centred / std.clamp_min(1e-2)


def _sinusoids(length: int, dim: int) -> torch.Tensor:
    """Absolute sinusoidal positions ``(length, dim)``."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10_000.0) / dim))
    out = torch.zeros(length, dim)
    out[:, 0::2], out[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return out


class _Block(nn.Module):
    """Conformer-style block (pre-norm): self attention, depthwise convolution, feed-forward."""

    def __init__(self, c: SpeechJudgeConfig) -> None:
        super().__init__()
        d = c.dim
        self.heads, self.dropout = c.heads, c.dropout
        self.attn_norm = nn.LayerNorm(d)
        self.qkv, self.attn_out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.conv_norm = nn.LayerNorm(d)
        self.conv_in = nn.Linear(d, 2 * d)  # GLU
        self.depthwise = nn.Conv1d(d, d, c.conv_kernel, padding=c.conv_kernel // 2, groups=d)
        self.conv_act_norm = nn.LayerNorm(d)
        self.conv_out = nn.Linear(d, d)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = nn.Sequential(
            nn.Linear(d, c.ffn_mult * d),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.ffn_mult * d, d),
        )
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, mask[:, None, None, :], p)  # (B, H, T, d/H)
        x = x + self.drop(self.attn_out(a.transpose(1, 2).reshape(b, t, d)))
        h = F.glu(self.conv_in(self.conv_norm(x)), dim=-1) * mask[..., None]  # padding stays 0
        h = self.depthwise(h.transpose(1, 2)).transpose(1, 2)
        x = x + self.drop(self.conv_out(F.silu(self.conv_act_norm(h))))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


class SpeechJudge(nn.Module):
    """Raw log-mel frames ``(B, T, n_mels)`` -> CTC log-probabilities ``(B, T', 29)`` with
    ``T' = upsample * ceil(T / time_reduction)`` (rounding at each halving); ``transcribe``
    turns audio into words."""

    def __init__(
        self, config: SpeechJudgeConfig | None = None, vocabulary: Iterable[str] = (),
        pronunciations: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.config = c = config or SpeechJudgeConfig()
        self.vocabulary = tuple(vocabulary)  # most frequent first: ties snap to the commoner word
        # espeak-ng phonemes of each vocabulary word ("f oU n"); filled in on first use if missing
        self.pronunciations = dict(pronunciations or {})
        self._snapper: _Snapper | None = None
        self.metadata: dict[str, Any] = {}
        self.logmel = LogMel(c)
        self.halvings = c.time_reduction.bit_length() - 1
        self.subsample = nn.Sequential(*(
            layer
            for i in range(self.halvings)
            for layer in (nn.Conv1d(c.dim if i else c.n_mels, c.dim, 3, stride=2, padding=1),
                          nn.GELU())
        ))  # fmt: skip
        self.blocks = nn.ModuleList(_Block(c) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.upsample * (len(ALPHABET) + 1))

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """CTC frames for ``lengths`` mel frames."""
        for _ in range(self.halvings):
            lengths = (lengths - 1) // 2 + 1
        return lengths * self.config.upsample

    def forward(self, mels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``mels (B, T, n_mels)`` raw log-mels (padding anywhere past ``lengths``) -> CTC
        log-probabilities ``(B, T', 29)``; frames past ``output_lengths(lengths)`` are padding."""
        b, t, _ = mels.shape
        mask = torch.arange(t)[None] < lengths[:, None]  # (B, T)
        x = self.subsample(_normalise(mels, mask).transpose(1, 2)).transpose(1, 2)  # (B, T/r, D)
        frames = self.output_lengths(lengths) // self.config.upsample
        mask = torch.arange(x.shape[1])[None] < frames[:, None]  # (B, T/r)
        x = (x + _sinusoids(x.shape[1], x.shape[2])) * mask[..., None]
        for block in self.blocks:
            x = block(x, mask)
        logits = self.head(self.norm(x)).view(b, -1, len(ALPHABET) + 1)  # (B, T' , 29)
        return logits.log_softmax(-1)

    # ------------------------------------------------------------------ judging
    @torch.no_grad()
    def transcribe(
        self,
        audio: np.ndarray | Sequence[np.ndarray],
        sample_rate: int = SAMPLE_RATE,
        *,
        snap: bool = True,
    ) -> list[str] | str:
        """Transcript of one mono clip (a string) or of a list of clips (a list), in the judge's
        form (``judge_text``). Audio at any integer rate is resampled to 16 kHz; ``(T, C)``
        audio is averaged over channels. Words outside the vocabulary are snapped by the audio
        (``decode``); ``snap=False`` gives the raw greedy CTC output."""
        single = isinstance(audio, np.ndarray)
        clips = [audio] if single else list(audio)
        out = [self._transcribe_one(_as_mono(c, sample_rate))[1 if snap else 0] for c in clips]
        return out[0] if single else out

    @torch.no_grad()
    def _transcribe_one(self, samples: np.ndarray) -> tuple[str, str]:
        """16 kHz samples -> (raw greedy transcript, snapped transcript)."""
        if len(samples) < self.config.win:  # under 25 ms: no speech to hear
            return "", ""
        was_training = self.training
        self.eval()
        mels = self.logmel(torch.from_numpy(samples))[None]  # (1, F, n_mels)
        log_probs = self(mels, torch.tensor([mels.shape[1]]))[0]  # (T', 29)
        self.train(was_training)
        return self.decode(log_probs)

    def decode(self, log_probs: torch.Tensor) -> tuple[str, str]:
        """CTC log-probabilities ``(T', 29)`` of one clip -> (raw, snapped) transcripts.

        Raw: the best path. Snapped: each word outside the vocabulary becomes the vocabulary
        word, of those that sound or are spelled like it (``_Snapper.candidates``), that best
        explains the frames between its neighbours (highest CTC likelihood); a word with no
        such candidate is kept."""
        words = _greedy_words(log_probs)
        snapper = self._vocabulary_snapper()
        snapper.learn([w for w, _, _ in words])
        out = []
        for word, start, end in words:
            candidates = snapper.candidates(word)
            if word in snapper.rank or not candidates:
                out.append(word)
                continue
            frames = log_probs[start:end, None, :].expand(-1, len(candidates), -1)  # (t, N, 29)
            targets, target_lengths = _targets(candidates)
            nll = F.ctc_loss(frames, targets, torch.full((len(candidates),), end - start),
                             target_lengths, reduction="none")  # fmt: skip
            best = int(nll.argmin())  # ties: the more frequent word
            out.append(candidates[best] if torch.isfinite(nll[best]) else word)
        return " ".join(w for w, _, _ in words), " ".join(out)

    def snap(self, text: str) -> str:
        """Text only (no audio to consult): each word outside the vocabulary replaced by the
        vocabulary word it sounds like (fewest espeak-ng phoneme edits), else by the one it is
        spelled like (fewest letter edits), within ``_Snapper``'s limits; else kept."""
        return " ".join(self._vocabulary_snapper()(text.split()))

    def _vocabulary_snapper(self) -> _Snapper:
        if self._snapper is None:
            missing = [w for w in self.vocabulary if w not in self.pronunciations]
            for word, phones in zip(missing, _phonemize(missing), strict=True):
                self.pronunciations[word] = " ".join(phones)
            self._snapper = _Snapper(self.vocabulary, self.pronunciations)
        return self._snapper

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` (config, vocabulary, metadata) and float32 weights."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        return save_folder(
            directory,
            {
                "config": dataclasses.asdict(self.config),
                "vocabulary": list(self.vocabulary),
                "pronunciations": self.pronunciations,
                "metadata": self.metadata,
            },
            state,
        )

    @classmethod
    def load(cls, directory: str | Path = SPEECH_JUDGE_ASSETS) -> SpeechJudge:
        """Read a judge folder; by default the shipped one (``omniflex/assets/speech_judge``)."""
        directory = Path(directory)
        data, tensors = load_folder(
            directory,
            what="a speech judge",
            fix=f"train one with {RETRAIN.replace('omniflex/assets/speech_judge', str(directory))}",
        )
        # judges saved before time_reduction was a setting halved time twice (x4)
        config = {"time_reduction": 4, **data["config"]}
        judge = cls(
            SpeechJudgeConfig(**config), data.get("vocabulary", ()),
            data.get("pronunciations"),
        )  # fmt: skip
        judge.metadata = data.get("metadata", {})
        judge.load_state_dict(tensors)
        return judge.eval()


def _as_mono(clip: np.ndarray, sample_rate: int) -> np.ndarray:
    clip = np.asarray(clip)
    if clip.ndim == 2:
        clip = clip.mean(axis=1)
    if clip.ndim != 1 or not np.issubdtype(clip.dtype, np.floating):
        raise ValueError(
            f"the speech judge takes float audio (T,) or (T, C), got {clip.dtype} {clip.shape}"
        )
    if not np.isfinite(clip).all():
        raise ValueError("the speech judge got audio with NaN or Inf samples")
    return np.ascontiguousarray(resample(clip, sample_rate, SAMPLE_RATE), dtype=np.float32)


def _greedy_words(log_probs: torch.Tensor) -> list[tuple[str, int, int]]:
    """Best path ``(T', 29)`` -> its words (repeats merged, blanks dropped), each with the
    frames ``[start, end)`` between the previous word's last letter and the next one's first."""
    ids = log_probs.argmax(-1).tolist()
    letters: list[list[tuple[int, str]]] = [[]]
    for t, i in enumerate(ids):
        if i and (t == 0 or ids[t - 1] != i):
            if ALPHABET[i - 1] == " ":
                letters.append([])
            else:
                letters[-1].append((t, ALPHABET[i - 1]))
    letters = [w for w in letters if w]
    return [
        ("".join(c for _, c in w),
         letters[k - 1][-1][0] + 1 if k else 0,
         letters[k + 1][0][0] if k + 1 < len(letters) else len(ids))
        for k, w in enumerate(letters)
    ]  # fmt: skip


def _greedy(log_probs: torch.Tensor) -> str:
    """Best path ``(T', 29)`` -> text: repeats merged, blanks dropped, spaces collapsed."""
    return " ".join(w for w, _, _ in _greedy_words(log_probs))


def _phonemize(words: Sequence[str]) -> list[tuple[str, ...]]:
    """espeak-ng's phonemes of each word, read alone in British English, stress marks dropped."""
    if not words:
        return []
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakMissingError(
            "the speech judge snaps words by their espeak-ng phonemes; install espeak-ng "
            "(`sudo apt-get install espeak-ng`)"
        )
    proc = subprocess.run([exe, "-q", "-x", "--sep= ", "-v", "en"], input="\n".join(words) + "\n",
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or len(lines) != len(words):
        if len(words) > 1:  # a word espeak-ng split over lines: ask one word at a time
            return [p for w in words for p in _phonemize([w])]
        lines = [" ".join(lines)]
    return [tuple(t for t in (p.strip("',%=") for p in line.split()) if t) for line in lines]


def _edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


class _Snapper:
    """The judge's closed vocabulary, searched by sound and by spelling (memoised).

    A word *sounds like* a vocabulary word when their espeak-ng phonemes are within
    ``max(1, n // 3)`` edits (``n``: the word's phonemes), and is *spelled like* one within
    ``len // 3`` letter edits. The judge's spelling errors are mostly phonetic ("fone", "hi",
    "tee"): letters away from the right word, but no phoneme from it."""

    def __init__(self, vocabulary: Sequence[str], pronunciations: Mapping[str, str]) -> None:
        self.rank = {w: i for i, w in enumerate(vocabulary)}
        self.phones = {w: tuple(pronunciations[w].split()) for w in vocabulary}
        self.by_phones: dict[int, list[str]] = {}
        self.by_letters: dict[int, list[str]] = {}
        for w in vocabulary:
            self.by_phones.setdefault(len(self.phones[w]), []).append(w)
            self.by_letters.setdefault(len(w), []).append(w)
        self._alike: dict[str, tuple[list[tuple[int, int, str]], list[tuple[int, int, str]]]] = {}

    def learn(self, words: Iterable[str]) -> None:
        """Look up the phonemes of the new out-of-vocabulary ``words`` (one espeak-ng call)."""
        new = sorted({w for w in words if w not in self.rank and w not in self._alike})
        for word, phones in zip(new, _phonemize(new), strict=True):
            self._alike[word] = (
                self._search(word, phones, self.by_phones, max(1, len(phones) // 3)),
                self._search(word, word, self.by_letters, len(word) // 3),
            )

    def _search(
        self, word: str, target: Sequence[str], index: dict[int, list[str]], limit: int
    ) -> list[tuple[int, int, str]]:
        """``(edits, letter edits, word)`` of each vocabulary word within ``limit`` edits."""
        found = []
        for n in range(len(target) - limit, len(target) + limit + 1):
            for candidate in index.get(n, ()):
                seq = self.phones[candidate] if index is self.by_phones else candidate
                d = _edit_distance(target, seq)
                if d <= limit:
                    found.append((d, _edit_distance(word, candidate), candidate))
        return found

    def candidates(self, word: str) -> list[str]:
        """Vocabulary words that sound or are spelled like ``word``, most frequent first."""
        self.learn([word])
        if word in self.rank:
            return [word]
        sound, spelling = self._alike[word]
        return sorted({c for _, _, c in sound + spelling}, key=self.rank.__getitem__)

    def __call__(self, words: Sequence[str]) -> list[str]:
        """Text-only snapping: the closest sound-alike, else the closest look-alike, else the
        word itself (ties: fewer letter edits, then the more frequent word)."""
        self.learn(words)
        out = []
        for w in words:
            alike = self._alike.get(w, ([], []))
            found = next((group for group in alike if group), None)
            out.append(min(found, key=lambda f: (*f[:2], self.rank[f[2]]))[2] if found else w)
        return out


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class _Clip:
    """One clip to render: ``spoken`` is what espeak-ng reads, ``target`` the transcript."""

    spoken: str
    target: str
    voice: str
    pitch_shift: int
    condition: str  # clean | augmented | codec | silence
    seed: tuple[int, ...]


@functools.cache
def _codec() -> Any:
    return load_tokenizer("audio")


def _render_audio(clip: _Clip) -> np.ndarray:
    """The clip's 16 kHz samples (deterministic for equal clips)."""
    rng = np.random.default_rng(list(clip.seed))
    if clip.condition == "silence":  # digital silence or faint noise, 0.3-2 s
        n = int(rng.integers(SAMPLE_RATE * 3 // 10, 2 * SAMPLE_RATE))
        level = 0.0 if rng.random() < 0.3 else 10 ** rng.uniform(-4, -2)
        return (rng.standard_normal(n) * level).astype(np.float32)
    audio = synthesize(clip.spoken, voice(clip.voice), pitch_shift=clip.pitch_shift)
    if clip.condition == "augmented":
        audio, _ = augment(audio, rng)
    elif clip.condition == "codec":
        codec = _codec()
        audio = codec.decode(codec.encode(audio))[0, : len(audio)].numpy()
    return audio


@functools.cache
def _logmel(config: SpeechJudgeConfig) -> LogMel:
    return LogMel(config)


def _render_mel(job: tuple[_Clip, SpeechJudgeConfig]) -> np.ndarray:
    clip, config = job
    torch.set_num_threads(1)
    with torch.no_grad():
        return _logmel(config)(torch.from_numpy(_render_audio(clip))).numpy().astype(np.float16)


def _corpus_texts(
    split: str, per_task: int, tasks: Sequence[str] = _CORPUS_TASKS,
    roles: Sequence[str] = ("user", "assistant"),
) -> list[str]:  # fmt: skip
    """Every text and spoken transcript of ``roles`` in ``per_task`` corpus conversations of
    each of ``tasks`` (in order, without repeats)."""
    seen: dict[str, None] = {}
    for task in tasks:
        for i in range(per_task):
            for message in make_sample(task, split, i, media=False).conversation["messages"]:
                if message["role"] not in roles:
                    continue
                for part in message["content"]:
                    text = part.get("text") or part.get("transcript")
                    if text and judge_text(text):
                        for piece in _pieces(text):
                            seen.setdefault(piece, None)
    return list(seen)


def _pieces(text: str) -> list[str]:
    """``text``, or its sentences when it is longer than ``_MAX_WORDS`` words."""
    if len(text.split()) <= _MAX_WORDS:
        return [text]
    return [s for s in re.split(r"(?<=[.?!])\s+", text) if judge_text(s)]


def _grammar_clip(rng: np.random.Generator, text: str) -> tuple[str, str]:
    """(spoken, target): the written form (as TTS reads it) or the bare lower-case one."""
    return (written(text) if rng.random() < 0.5 else text), judge_text(text)


def _training_clips(n: int, seed: int) -> list[_Clip]:
    """``n`` training clips, every hundredth one silence. The others: each covering sentence
    twice (every grammar word in two voices), then 60% grammar sentences (of four drawn, the one
    whose rarest word was heard least, so rare words catch up) and 40% corpus texts. Voices: the
    input and preset voices, presets counted twice."""
    cover = covering_sentences()
    corpus = _corpus_texts("train", 400)
    voices = [v.name for v in (*INPUT_VOICES, *PRESET_VOICES, *PRESET_VOICES)]
    heard: Counter[str] = Counter()
    clips = []
    for i in range(n):
        rng = np.random.default_rng([_TRAIN_STREAM, seed, i])
        key = (_TRAIN_STREAM, seed, i, 1)
        if i % 100 == 99:
            clips.append(_Clip("", "", voices[0], 0, "silence", key))
            continue
        if i < 2 * len(cover):
            spoken, target = _grammar_clip(rng, cover[i % len(cover)])
        elif rng.random() < 0.6:
            drawn = [sample_sentence(rng, "train") for _ in range(4)]
            text = min(drawn, key=lambda s: min(heard[w] for w in s.split()))
            spoken, target = _grammar_clip(rng, text)
        else:
            text = corpus[int(rng.integers(len(corpus)))]
            target = judge_text(text)
            spoken = text if rng.random() < 0.7 else target
        heard.update(target.split())
        u = rng.random()
        condition = "clean" if u < 0.3 else "codec" if u < 0.55 else "augmented"
        shift = int(rng.integers(-10, 11)) if rng.random() < 0.5 else 0
        clips.append(
            _Clip(spoken, target, voices[int(rng.integers(len(voices)))], shift, condition, key)
        )
    return clips


def _held_out_clips(
    voices: Sequence[Voice],
    n: int,
    seed: int,
    split: str,
    condition: str,
    texts: Sequence[str] | None = None,
) -> list[_Clip]:
    """``n`` clips of distinct ``split`` sentences (or of ``texts``), voice ``i % len(voices)``;
    the same sentences and voices for every ``condition``."""
    stream = _TEST_STREAM if split == "test" else _VAL_STREAM
    rng = np.random.default_rng([stream, seed])
    if texts is None:
        chosen: dict[str, None] = {}
        while len(chosen) < n:
            chosen.setdefault(sample_sentence(rng, split), None)
        texts = [written(t) if i % 2 == 0 else t for i, t in enumerate(chosen)]
    return [
        _Clip(t, judge_text(t), voices[i % len(voices)].name, 0, condition, (stream, seed, i))
        for i, t in enumerate(texts[:n])
    ]


def _render_all(
    clips: Sequence[_Clip], config: SpeechJudgeConfig, workers: int, progress: bool, desc: str
) -> list[np.ndarray]:
    jobs = [(c, config) for c in clips]
    if workers <= 1:
        return [_render_mel(j) for j in tqdm(jobs, desc=desc, disable=not progress)]
    ctx = multiprocessing.get_context("spawn")  # torch and forked OpenMP threads do not mix
    with ctx.Pool(workers) as pool:
        it = pool.imap(_render_mel, jobs, chunksize=16)
        return list(tqdm(it, total=len(jobs), desc=desc, disable=not progress, mininterval=10))


def _cached_mels(
    clips: Sequence[_Clip],
    config: SpeechJudgeConfig,
    cache_dir: Path | None,
    name: str,
    workers: int,
    progress: bool,
) -> list[np.ndarray]:
    """Log-mels of ``clips``, from ``cache_dir`` when an identical clip list was rendered."""
    key = (_DATA_VERSION, dataclasses.astuple(config)[:4], [dataclasses.astuple(c) for c in clips])
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    path = cache_dir / f"{name}-{len(clips)}-{digest}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        with np.load(path) as data:
            flat, offsets = data["mels"], data["offsets"]
        return [flat[a:b] for a, b in itertools.pairwise(offsets)]
    mels = _render_all(clips, config, workers, progress, f"render {name}")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(m) for m in mels])
        with atomic_path(path) as tmp, open(tmp, "xb") as f:
            np.savez_compressed(f, mels=np.concatenate(mels), offsets=offsets)
    return mels


# ----------------------------------------------------------------------------- training
def _batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of batches of similar length (little padding), in random order."""
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), 50 * batch_size):
        pool = order[start : start + 50 * batch_size]
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        batches += [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _pad(mels: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(m) for m in mels])
    x = torch.zeros(len(mels), int(lengths.max()), mels[0].shape[1])
    for i, m in enumerate(mels):
        x[i, : len(m)] = torch.from_numpy(m.astype(np.float32))
    return x, lengths


def _targets(texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [[_CHAR_ID[c] for c in t] for t in texts]
    return torch.tensor([i for row in ids for i in row], dtype=torch.long), torch.tensor(
        [len(row) for row in ids]
    )


@torch.no_grad()
def _wer_of_mels(judge: SpeechJudge, mels: Sequence[np.ndarray], targets: Sequence[str]) -> float:
    judge.eval()
    hyps = []
    for i in range(0, len(mels), 32):
        x, lengths = _pad(mels[i : i + 32])
        log_probs = judge(x, lengths)
        for lp, n in zip(log_probs, judge.output_lengths(lengths), strict=True):
            hyps.append(judge.decode(lp[:n])[1])
    judge.train()
    return _wer(targets, hyps)


def _wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus-level word error rate (all errors / all reference words)."""
    return float(jiwer.wer(list(references), [h if h else "" for h in hypotheses]))


def _vocabulary(texts: Iterable[str]) -> tuple[str, ...]:
    """Grammar words and the words of ``texts``, most frequent first (then alphabetical)."""
    counts = Counter(w for t in texts for w in t.split())
    for w in grammar_words():
        counts[judge_text(w)] += 0
    return tuple(sorted((w for w in counts if w), key=lambda w: (-counts[w], w)))


def judge_wer(
    judge: SpeechJudge,
    voices: Sequence[Voice] = TEST_VOICES,
    n: int = 360,
    seed: int = 0,
    *,
    conditions: Sequence[str] = ("clean", "augmented", "codec"),
    texts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Word error rates of ``judge`` on ``n`` never-seen test sentences (or ``texts``), spoken by
    ``voices`` in turn, under each condition: ``clean``, ``augmented`` (``speech.augment``: speed,
    reverberation, noise) and ``codec`` (through the shipped audio codec). Returns
    ``{"clips": n, "<condition>": {"wer_raw", "wer_snapped", "examples"}}``; ``examples`` are the
    first three (reference, snapped transcript) pairs that differ."""
    if n < 1 or not voices:
        raise ValueError(f"judge_wer needs n >= 1 and at least one voice, got n={n}, {voices!r}")
    if texts is not None:
        n = min(n, len(texts))
    out: dict[str, Any] = {"clips": n, "voices": [v.name for v in voices]}
    for condition in conditions:
        clips = _held_out_clips(voices, n, seed, "test", condition, texts)
        refs = [clip.target for clip in clips]
        raw, snapped = zip(*(judge._transcribe_one(_render_audio(c)) for c in clips), strict=True)
        out[condition] = {
            "wer_raw": round(_wer(refs, raw), 4),
            "wer_snapped": round(_wer(refs, snapped), 4),
            "examples": [(r, h) for r, h in zip(refs, snapped, strict=True) if r != h][:3],
        }
    return out


def train_speech_judge(
    out: str | Path | None,
    *,
    minutes: float = 25,
    seed: int = 0,
    progress: bool = True,
    config: SpeechJudgeConfig | None = None,
    n_clips: int = 20_000,
    steps: int | None = None,
    batch_size: int = 32,
    lr: float = 2e-3,
    threads: int = 2,
    workers: int = 2,
    cache_dir: str | Path | None = "runs/speech_judge",
    test_clips: int = 360,
) -> dict[str, Any]:
    """Train a ``SpeechJudge``, measure it on held-out voices and save it to ``out`` (unless None).

    The clips are rendered once with ``workers`` processes and cached as log-mels under
    ``cache_dir``. Unless ``steps`` is given, the step count is set after 30 timed steps so the
    optimisation takes about ``minutes`` (the metadata records it: pass it as ``steps`` to repeat
    a run). The checkpoint with the lowest validation WER (``VAL_VOICES``) is kept; its test
    WERs (``judge_wer`` on ``test_clips`` sentences in ``TEST_VOICES``) are returned and written
    into the metadata.
    """
    if n_clips < 100 or batch_size < 1 or threads < 1 or lr <= 0 or minutes <= 0:
        raise ValueError(
            f"need n_clips >= 100, batch_size, threads >= 1, lr and minutes > 0; got "
            f"n_clips={n_clips}, batch_size={batch_size}, threads={threads}, lr={lr}, "
            f"minutes={minutes}"
        )
    config = config or SpeechJudgeConfig()
    cache = Path(cache_dir) if cache_dir is not None else None
    log = _log if progress else lambda *_: None
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        clips = _training_clips(n_clips, seed)
        mels = _cached_mels(clips, config, cache, "train", workers, progress)
        val_clips = [
            c
            for cond in ("clean", "augmented")
            for c in _held_out_clips(VAL_VOICES, 100, seed, "val", cond)
        ]
        val_mels = _cached_mels(val_clips, config, cache, "val", workers, progress)
        data_seconds = time.perf_counter() - start
        lengths = np.array([len(m) for m in mels])
        log(
            f"{len(mels)} clips, {lengths.sum() / 100 / 3600:.2f} h, rendered/loaded in "
            f"{data_seconds:.0f} s"
        )

        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        np_rng = np.random.default_rng([_TRAIN_STREAM, seed, n_clips])  # batch order
        judge = SpeechJudge(config, _vocabulary(c.target for c in clips))
        n_params = sum(p.numel() for p in judge.parameters())
        log(f"{n_params / 1e6:.2f} M parameters, vocabulary {len(judge.vocabulary)} words")
        decay = [p for p in judge.parameters() if p.dim() > 1]
        no_decay = [p for p in judge.parameters() if p.dim() <= 1]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
            lr=lr,
            betas=(0.9, 0.98),
        )
        warmup, calibrate = 150, 30
        schedule = CosineSchedule(lr, lr * 0.02, warmup, max(steps or 0, warmup + 1))
        judge.train()
        batches: list[np.ndarray] = []
        best = (math.inf, -1, None)
        history: list[dict[str, float]] = []
        eval_every = None if steps is None else max(50, steps // 6)
        train_start = time.perf_counter()
        step, total = 0, steps
        bar = tqdm(total=steps, desc="speech judge", disable=not progress, mininterval=30)
        losses: list[float] = []
        while total is None or step < total:
            if not batches:
                batches = _batches(lengths, batch_size, np_rng)
            idx = batches.pop()
            x, x_lengths = _pad([mels[i] for i in idx])
            x = warp_and_mask(x, x_lengths, gen)
            targets, target_lengths = _targets([clips[i].target for i in idx])
            for group in opt.param_groups:
                group["lr"] = schedule.lr_at(step)
            log_probs = judge(x, x_lengths)
            loss = F.ctc_loss(
                log_probs.transpose(0, 1),
                targets,
                judge.output_lengths(x_lengths),
                target_lengths,
                zero_infinity=True,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(judge.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            step += 1
            bar.update()
            calibrating = total is None and step == calibrate
            if calibrating:  # fit the run and its 7 validations into the time budget
                per_step = (time.perf_counter() - train_start) / calibrate
                eval_start = time.perf_counter()
            if calibrating or (eval_every and (step % eval_every == 0 or step == total)):
                val_wer = _wer_of_mels(judge, val_mels, [c.target for c in val_clips])
                mean_loss = float(np.mean(losses[-(eval_every or calibrate) :]))
                history.append(
                    {"step": step, "loss": round(mean_loss, 4), "val_wer": round(val_wer, 4)}
                )
                elapsed = time.perf_counter() - train_start
                log(
                    f"step {step}/{total} loss {mean_loss:.4f} lr {schedule.lr_at(step):.2e} "
                    f"val WER {val_wer:.4f} ({elapsed:.0f} s)"
                )
                if val_wer <= best[0]:
                    best = (val_wer, step, {k: v.clone() for k, v in judge.state_dict().items()})
            if calibrating:
                # an untrained judge decodes nothing; a trained one snaps words: ~0.1 s a clip
                eval_seconds = max(time.perf_counter() - eval_start, 0.1 * len(val_clips))
                left = minutes * 60 - (time.perf_counter() - train_start) - 6 * eval_seconds
                total = max(warmup + 1, calibrate + int(left / per_step))
                eval_every = max(50, total // 6)
                schedule = CosineSchedule(lr, lr * 0.02, warmup, total)
                bar.total = total
                log(f"{per_step:.2f} s a step, {eval_seconds:.0f} s a validation: {total} "
                    f"steps for {minutes:g} minutes")  # fmt: skip
        bar.close()
        train_seconds = time.perf_counter() - train_start
        judge.load_state_dict(best[2])
        judge.eval()

        test = judge_wer(judge, TEST_VOICES, test_clips, seed)
        answers = judge_wer(
            judge,
            TEST_VOICES,
            120,
            seed,
            conditions=("clean", "codec"),
            texts=_corpus_texts("test", 40, _ANSWER_TASKS, ("assistant",)),
        )
        judge.metadata = {
            "training": {
                "clips": n_clips,
                "hours": round(float(lengths.sum()) / 100 / 3600, 2),
                "steps": total,
                "best_step": best[1],
                "batch_size": batch_size,
                "lr": lr,
                "seed": seed,
                "threads": threads,
                "train_seconds": round(train_seconds, 1),
                "data_seconds": round(data_seconds, 1),
                "parameters": n_params,
                "voices": [v.name for v in (*INPUT_VOICES, *PRESET_VOICES)],
                "history": history,
            },
            "val": {
                "voices": [v.name for v in VAL_VOICES],
                "clips": len(val_clips),
                "wer_snapped": round(best[0], 4),
            },
            "test": test,
            "test_answers": answers,
            "retrain": RETRAIN.replace("judge')", f"judge', steps={total})"),
        }
        log(json.dumps({"test": test, "test_answers": answers}, indent=1))
        if out is not None:
            judge.save(out)
        return judge.metadata
    finally:
        torch.set_num_threads(previous_threads)


def _log(message: str) -> None:
    tqdm.write(f"[speech judge {time.strftime('%H:%M:%S')}] {message}")
