"""Continuous input encoders: streaming speech equals the whole signal and is causal; patches
land in their own positions; both convert to flex."""

import numpy as np
import pytest
import torch

from omniflex.flex import FlexConfig, convert_to_flex
from omniflex.model.encoders import ImagePatchEncoder, MelConfig, SpeechEncoder


def _speech(seconds: float = 1.3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    tone = 0.3 * torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 3 * t)
    return (tone + 0.01 * torch.randn(t.shape, generator=gen)).unsqueeze(0)  # (1, T)


def test_speech_positions_every_40_ms():
    enc = SpeechEncoder(32)
    audio = _speech()
    out = enc(audio)
    assert out.shape == (1, enc.positions(audio.shape[1]), 32) == (1, 32, 32)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        enc(audio[0])
    with pytest.raises(ValueError, match="multiple of hop"):
        MelConfig(window=500)


SHAPES = [dict(layers=0), dict(layers=3), dict(layers=3, ffn=2)]  # one Linear, convs, blocks


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("chunks", [[640] * 40, [1, 999, 3333, 17, 160, 16000], [20800]])
def test_streaming_chunks_give_the_whole_signals_positions(chunks, shape):
    torch.manual_seed(0)
    enc = SpeechEncoder(32, width=16, **shape).eval()
    audio = _speech()
    whole = enc(audio)
    got, at = [], 0
    with torch.no_grad(), enc.streaming():
        for n in chunks:
            got.append(enc(audio[:, at : at + n]))
            at += n
    streamed = torch.cat(got, dim=1)
    assert streamed.shape == whole.shape
    assert torch.allclose(streamed, whole, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_speech_encoder_is_causal(shape):
    enc = SpeechEncoder(16, width=16, **shape).eval()
    audio = _speech()
    changed = audio.clone()
    changed[:, 12_000:] = torch.randn_like(changed[:, 12_000:])
    a, b = enc(audio), enc(changed)
    last_clean = 12_000 // 640  # positions that end before the change
    assert torch.equal(a[:, :last_clean], b[:, :last_clean])
    assert not torch.allclose(a[:, last_clean + 1 :], b[:, last_clean + 1 :])


@pytest.mark.parametrize("ffn", [0, 2])
def test_a_clip_reads_only_its_own_rows_within_the_receptive_field(ffn):
    torch.manual_seed(0)
    enc = SpeechEncoder(16, layers=3, width=8, kernel=3, ffn=ffn).eval()
    assert enc.history == 2 * (1 + 2 + 4)
    rows = torch.randn(40, enc.features.row_size)
    starts = torch.zeros(40, dtype=torch.bool)
    starts[[0, 25]] = True  # two clips: rows 0..24 and 25..39
    base = enc.project(rows, starts)
    changed = rows.clone()
    changed[24] += 1.0  # the first clip's last row
    after = enc.project(changed, starts)
    assert torch.equal(base[25:], after[25:])  # the second clip never reads the first
    assert not torch.allclose(base[24], after[24])
    changed = rows.clone()
    changed[0] += 1.0
    after = enc.project(changed, starts)
    moved = (after - base).abs().sum(-1) > 0
    assert moved[: 1 + enc.history].all() and not moved[1 + enc.history :].any()


def test_patches_are_row_major_and_any_size_is_resized():
    torch.manual_seed(0)
    enc = ImagePatchEncoder(24)
    image = np.zeros((64, 64, 3), np.uint8)
    base = enc(image)
    image[8:16, 16:24] = 255  # patch row 1, column 2
    changed = enc(image)
    moved = (changed - base).abs().sum(-1)[0]  # (64,)
    assert moved.argmax().item() == 1 * 8 + 2 and (moved > 0).sum().item() == 1
    assert enc(np.zeros((2, 128, 96, 3), np.uint8)).shape == (2, 64, 24)
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        enc(np.zeros((64, 64), np.uint8))


def test_encoders_convert_to_flex_and_stay_close_to_float32():
    torch.manual_seed(0)
    speech, patches = SpeechEncoder(32), ImagePatchEncoder(32)
    audio, image = _speech(), torch.rand(1, 64, 64, 3)
    want = speech(audio).detach(), patches(image).detach()
    cfg = FlexConfig.from_recipe_name("flex16+5")
    flex_speech, flex_patches = (
        convert_to_flex(speech, config=cfg),
        convert_to_flex(patches, config=cfg),
    )
    for got, ref in zip((flex_speech(audio), flex_patches(image)), want, strict=True):
        noise = (got.detach() - ref).pow(2).mean()
        assert noise > 0  # the projections run in flex16 now: rounding moves the outputs
        sqnr = 10 * torch.log10(ref.pow(2).mean() / noise)
        assert sqnr > 50, float(sqnr)
