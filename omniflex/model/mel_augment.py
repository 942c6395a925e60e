"""Training-time views of log-mel input: a vocal-tract-length warp and SpecAugment masks.

Speech recognisers trained on a few dozen synthetic voices learn those voices: measured on this
project's corpus, the speech judge's held-out-voice WER and the omni model's stage-0 speech
encoder both lose most of their gap to the training voices under these views. Unseen voices
differ from the training ones mostly along the mel axis, so each clip is stretched there by a
random factor; masks of a few bands and a few frames make the recogniser read context rather
than one cue. Applied to features only (no weights), in training only.

* ``warp_and_mask``: padded frames ``(B, T, n_mels)`` with their lengths (the speech judge).
* ``augment_rows``: a batch of clips as the omni model reads them, flat ``(M, stack * n_mels)``
  rows of ``stack`` frames each, clip after clip (the speech encoder's stage 0).
"""

from __future__ import annotations

import torch

__all__ = ["augment_rows", "warp_and_mask"]


def warp_and_mask(x: torch.Tensor, lengths: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Log-mel frames ``(B, T, M)`` (clip ``b`` valid for ``lengths[b]`` frames) -> a training
    view: each clip stretched along the mel axis by a factor in [0.88, 1.12] (vocal tract
    length), two frequency masks of up to 10 bands and time masks of up to 6 frames (one per
    2 s: longer ones hide whole words, which no context in a random sentence can restore).
    Masked values become the clip's lowest value (silence)."""
    b, t, m = x.shape
    valid = (torch.arange(t)[None] < lengths[:, None])[..., None]  # padding is not the floor
    floor = torch.where(valid, x, torch.inf).amin(dim=(1, 2), keepdim=True)
    alpha = 0.88 + 0.24 * torch.rand(b, 1, generator=gen)
    src = (torch.arange(m)[None] * alpha).clamp(max=m - 1)  # (B, M) source band of each band
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=m - 1)
    w = (src - lo)[:, None, :]
    x = (
        torch.gather(x, 2, lo[:, None].expand(b, t, m)) * (1 - w)
        + torch.gather(x, 2, hi[:, None].expand(b, t, m)) * w
    )
    band = torch.arange(m)[None]
    for _ in range(2):
        width = torch.randint(0, 11, (b, 1), generator=gen)
        start = (torch.rand(b, 1, generator=gen) * (m - width)).long()
        x = torch.where(((band >= start) & (band < start + width))[:, None, :], floor, x)
    frame = torch.arange(t)[None]
    for _ in range(max(1, t // 200)):
        width = torch.randint(0, 7, (b, 1), generator=gen)
        start = (torch.rand(b, 1, generator=gen) * (lengths[:, None] - width).clamp_min(1)).long()
        x = torch.where(((frame >= start) & (frame < start + width))[..., None], floor, x)
    return x


def augment_rows(
    rows: torch.Tensor, lengths: list[int], gen: torch.Generator, *, n_mels: int = 80
) -> torch.Tensor:
    """Flat rows ``(sum(lengths), stack * n_mels)`` of clips one after another (clip ``i`` has
    ``lengths[i]`` rows of ``stack`` frames each) -> the same layout, each clip seen through
    ``warp_and_mask`` frame by frame."""
    if rows.shape[-1] % n_mels:
        raise ValueError(f"rows of {rows.shape[-1]} values are not frames of {n_mels} bands")
    stack = rows.shape[-1] // n_mels
    clips = torch.split(rows.float().reshape(-1, n_mels), [n * stack for n in lengths])
    padded = torch.nn.utils.rnn.pad_sequence(list(clips), batch_first=True)  # (B, T, n_mels)
    frames = torch.tensor([n * stack for n in lengths])
    view = warp_and_mask(padded, frames, gen)
    keep = torch.arange(padded.shape[1])[None] < frames[:, None]
    return view[keep].reshape(-1, stack * n_mels)
