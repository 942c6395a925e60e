"""Speech judge: text form, CTC decoding, snapping, files; the shipped judge on unseen voices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniflex.common.voices import TEST_VOICES
from omniflex.data.speech import synthesize
from omniflex.media.audio import resample
from omniflex.safety.speech_judge import (
    ALPHABET,
    SPEECH_JUDGE_ASSETS,
    SpeechJudge,
    SpeechJudgeConfig,
    _greedy,
    judge_text,
    judge_wer,
)

# The shipped metadata measures ~1 in 20 words wrong at worst condition over 360 clips
# (see config.json); 20 clips are a small sample, so the bound leaves room for chance.
SMALL_SAMPLE_WER = 0.10


@pytest.fixture(scope="module")
def judge() -> SpeechJudge:
    return SpeechJudge.load()


def test_judge_text() -> None:
    assert judge_text("The old teacher found a cup.") == "the old teacher found a cup"
    assert judge_text("I can\u2019t copy other people's voices: aria, bram.") == (
        "i can't copy other people's voices aria bram"
    )
    assert judge_text('They said: "hello".') == "they said hello"
    assert judge_text("Seventeen plus 4 is 21.") == "seventeen plus four is twenty one"
    assert judge_text("...") == ""


def test_greedy_merges_repeats_and_drops_blanks() -> None:
    # class 0 is the blank, class i > 0 is ALPHABET[i - 1]: 1 = space, 2 = "a", 3 = "b"
    ids = [0, 3, 3, 0, 3, 1, 1, 0, 2, 0, 0, 1]
    log_probs = torch.full((len(ids), len(ALPHABET) + 1), -10.0)
    log_probs[torch.arange(len(ids)), torch.tensor(ids)] = 0.0
    assert _greedy(log_probs) == "bb a"  # a blank separates the doubled b; edges trimmed


def test_snap_to_vocabulary_by_sound_then_spelling() -> None:
    vocabulary = ["the", "one", "bone", "phone", "high", "teacher", "cup", "lizard"]
    judge = SpeechJudge(SpeechJudgeConfig(dim=16, layers=1, heads=2), vocabulary)
    # Sound first: "fone" is one letter from "one" but no phoneme from "phone".
    assert judge.snap("the fone") == "the phone"
    assert judge.snap("hi") == "high"
    assert judge.snap("the teecher") == "the teacher"
    assert judge.snap("lizzerd") == "lizard"
    assert judge.snap("blorf") == "blorf"  # nothing close enough: kept, still wrong
    assert judge.snap("xq") == "xq"
    assert set(judge.pronunciations) == set(vocabulary)


def test_decode_snaps_by_what_the_audio_supports() -> None:
    # The best path says "sup"; "pup" and "soup" both sound and look one edit away, and "pup"
    # is the more frequent, but only "soup" fits the frames: its "o" is merely unlikely.
    judge = SpeechJudge(SpeechJudgeConfig(dim=16, layers=1, heads=2), ["pup", "soup", "the"])
    frames = [{"s": 0.0}, {"_": -0.3, "o": -1.5}, {"u": 0.0}, {"p": 0.0}, {"_": 0.0}]
    log_probs = torch.full((len(frames), len(ALPHABET) + 1), -12.0)
    for t, frame in enumerate(frames):
        for char, value in frame.items():
            log_probs[t, 0 if char == "_" else ALPHABET.index(char) + 1] = value
    assert judge.decode(log_probs.log_softmax(-1)) == ("sup", "soup")
    assert judge.snap("sup") == "pup"  # text alone: the more frequent of two equal matches


def test_save_load_round_trip_and_determinism(tmp_path) -> None:
    torch.manual_seed(0)
    judge = SpeechJudge(SpeechJudgeConfig(dim=32, layers=1, heads=2), ["a", "b"])
    judge.metadata = {"note": "tiny"}
    judge.save(tmp_path)
    again = SpeechJudge.load(tmp_path)
    assert again.vocabulary == ("a", "b") and again.metadata == {"note": "tiny"}
    mels = torch.randn(2, 57, 80)
    lengths = torch.tensor([57, 40])
    judge.eval()
    out = again(mels, lengths)
    assert out.shape == (2, judge.output_lengths(torch.tensor([57]))[0], len(ALPHABET) + 1)
    torch.testing.assert_close(out, judge(mels, lengths), rtol=0, atol=0)
    # Padding never leaks into a shorter clip's frames.
    alone = judge(mels[1:, :40], lengths[1:])
    n = int(judge.output_lengths(torch.tensor([40]))[0])
    torch.testing.assert_close(alone[0, :n], out[1, :n], rtol=1e-5, atol=1e-5)


def test_load_missing_folder_says_how_to_retrain(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="train_speech_judge") as err:
        SpeechJudge.load(tmp_path / "nothing")
    assert str(tmp_path / "nothing") in str(err.value)


def test_shipped_metadata_reports_held_out_error_rates(judge: SpeechJudge) -> None:
    test = judge.metadata["test"]
    assert test["clips"] >= 300
    assert set(test["voices"]) == {v.name for v in TEST_VOICES}
    for condition in ("clean", "augmented", "codec"):
        assert test[condition]["wer_snapped"] <= test[condition]["wer_raw"] + 1e-9
    assert (SPEECH_JUDGE_ASSETS / "model.safetensors").is_file()


def test_shipped_judge_reads_unseen_sentences_in_unseen_voices(judge: SpeechJudge) -> None:
    result = judge_wer(judge, TEST_VOICES, n=20, seed=1, conditions=("clean",))
    assert result["clean"]["wer_snapped"] <= SMALL_SAMPLE_WER, result


def test_silence_transcribes_to_nothing(judge: SpeechJudge) -> None:
    rng = np.random.default_rng(0)
    assert judge.transcribe(np.zeros(16_000, np.float32)) == ""
    faint = (rng.standard_normal(24_000) * 1e-3).astype(np.float32)
    assert len(judge.transcribe(faint).split()) <= 1
    assert judge.transcribe(np.zeros(100, np.float32)) == ""


def test_transcribe_resamples_and_is_deterministic(judge: SpeechJudge) -> None:
    text = "the quiet baker painted two green boxes near the station"
    audio = synthesize(text, TEST_VOICES[0])
    at_22k = resample(audio, 16_000, 22_050)
    heard = judge.transcribe([audio, at_22k], sample_rate=16_000)
    assert isinstance(heard, list) and len(heard) == 2
    from_22k = judge.transcribe(at_22k, sample_rate=22_050)
    assert isinstance(from_22k, str)
    wrong = sum(a != b for a, b in zip(from_22k.split(), text.split(), strict=False))
    assert wrong <= 1 and len(from_22k.split()) == len(text.split()), from_22k
    assert judge.transcribe(audio) == judge.transcribe(audio.copy())
    stereo = np.stack([audio, audio], axis=1)
    assert judge.transcribe(stereo) == judge.transcribe(audio)
