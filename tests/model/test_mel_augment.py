"""Training-time views of log-mel input: the warp moves energy along the mel axis by at most
12%, masks write the clip's floor, clips never mix, and the flat-row layout is kept."""

import pytest
import torch

from omniflex.model.mel_augment import augment_rows, warp_and_mask


def test_warp_moves_a_band_by_at_most_twelve_percent():
    x = torch.full((64, 30, 80), -2.0)
    x[:, :, 40] = 3.0  # one bright band
    view = warp_and_mask(x, torch.full((64,), 30), torch.Generator().manual_seed(0))
    unmasked = view.amax(dim=2) > -2.0  # frames whose bright band survived the masks
    peaks = view.argmax(dim=2)[unmasked].float()
    assert peaks.min() >= 40 / 1.12 - 1 and peaks.max() <= 40 / 0.88 + 1
    assert len(set(peaks.tolist())) > 3  # clips are warped by different factors
    assert view.min() >= -2.0 and view.max() <= 3.0  # interpolation and masks stay in range


def test_masks_write_the_floor_and_follow_the_generator():
    x = torch.randn(32, 400, 80)
    lengths = torch.full((32,), 400)
    one = warp_and_mask(x, lengths, torch.Generator().manual_seed(1))
    two = warp_and_mask(x, lengths, torch.Generator().manual_seed(1))
    assert torch.equal(one, two)
    floors = x.amin(dim=(1, 2))
    masked = (one == floors[:, None, None]).float().mean()
    assert 0.01 < masked < 0.3, masked  # some bands and frames, never most of a clip


def test_rows_of_clips_keep_their_layout_and_never_mix():
    lengths = [3, 7, 5]
    rows = torch.cat([torch.full((n, 320), float(i + 1)) for i, n in enumerate(lengths)])
    view = augment_rows(rows, lengths, torch.Generator().manual_seed(0))
    assert view.shape == rows.shape
    assert torch.equal(view, rows)  # a constant clip is its own warp and its own floor
    ramp = torch.linspace(-1, 1, 80).repeat(4)  # every frame of a row: a ramp over the bands
    view = augment_rows(ramp.repeat(15, 1), lengths, torch.Generator().manual_seed(0))
    assert not torch.equal(view, ramp.repeat(15, 1))
    with pytest.raises(ValueError, match="bands"):
        augment_rows(torch.zeros(3, 100), [3], torch.Generator())
