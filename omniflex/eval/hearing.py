"""Does a model read the audio it is given? Its answer loss with each clip's own log-mel rows,
with another clip's and with silence.

A model that answers spoken requests from their wording's prior alone (the most common
transcript, the most common answer) scores the same whatever audio it gets; one that hears
scores far better with the clip's own rows. On held-out documents of a token cache (e.g. ASR
clips in the test split's held-out voices), each document is forwarded three times:

* ``own``: as recorded;
* ``other``: with the rows of another document of the same tasks (cut or padded with zeros to
  the same length), so the model still gets speech, but not this speech;
* ``zeros``: every row zero (no speech at all).

The figures are the mean cross-entropy (nats per answer token) of the answers. ``own`` far
below ``other`` means the model uses what it hears; ``other`` near ``zeros`` means it does not
mistake any speech for this speech. ``omniflex eval hearing`` prints them as JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from omniflex.model.encoders import PATCH_ROW, InputFeatures
from omniflex.model.token_cache import read_sidecar

__all__ = ["audio_reliance"]

_OTHER_STRIDE = 7  # document j hears document j + 7's rows


@torch.no_grad()
def audio_reliance(
    model: torch.nn.Module, cache: str | Path, *, tasks: tuple[str, ...] = ("asr",),
    documents: int = 60,
) -> dict[str, Any]:  # fmt: skip
    """Answer loss of ``model`` on the first ``documents`` documents of ``tasks`` in the token
    cache ``cache``, with own / another document's / zero log-mel rows (module docstring).
    Returns ``{"own", "other", "zeros", "documents", "tasks", "cache"}``."""
    cache = Path(cache)
    sidecar = read_sidecar(cache)
    if not (cache / "mel_offsets.npy").is_file() or "doc_tasks" not in sidecar:
        raise ValueError(
            f"token cache {cache} has no log-mel rows or no task sidecar; write it with "
            "`omniflex data tokenize` (input features are the default)"
        )
    wanted = {i for i, t in enumerate(sidecar["tasks"]) if t in tasks}
    mel_offsets = np.load(cache / "mel_offsets.npy")
    docs = [
        d for d, t in enumerate(sidecar["doc_tasks"])
        if t in wanted and mel_offsets[d + 1] > mel_offsets[d]
    ][:documents]  # fmt: skip
    if len(docs) < 2:
        raise ValueError(
            f"token cache {cache} holds {len(docs)} documents of tasks {list(tasks)} with "
            f"speech; need at least 2 (its tasks: {', '.join(sidecar['tasks'])})"
        )
    ids = np.load(cache / "ids.npy", mmap_mode="r")
    mask = np.load(cache / "loss_mask.npy", mmap_mode="r")
    offsets = np.load(cache / "offsets.npy")
    mel = np.load(cache / "mel.npy", mmap_mode="r")

    def rows_of(d: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(mel[mel_offsets[d] : mel_offsets[d + 1]], np.float32))

    was_training = model.training
    model.eval()
    losses: dict[str, list[float]] = {"own": [], "other": [], "zeros": []}
    no_patches = torch.zeros(0, PATCH_ROW, dtype=torch.uint8)
    for j, d in enumerate(docs):
        x = torch.from_numpy(np.asarray(ids[offsets[d] : offsets[d + 1]], np.int64))[None]
        m = torch.from_numpy(np.asarray(mask[offsets[d] : offsets[d + 1]], np.float32))[None]
        own = rows_of(d)
        other = rows_of(docs[(j + _OTHER_STRIDE) % len(docs)])[: len(own)]
        other = torch.cat([other, torch.zeros(len(own) - len(other), own.shape[1])])
        for kind, rows in (("own", own), ("other", other), ("zeros", torch.zeros_like(own))):
            features = InputFeatures(rows, no_patches, torch.zeros(0, dtype=torch.long))
            out = model(x[:, :-1], x[:, 1:], m[:, 1:], features=features)
            losses[kind].append(float(out.loss))
    model.train(was_training)
    return {
        **{k: round(float(np.mean(v)), 4) for k, v in losses.items()},
        "documents": len(docs),
        "tasks": list(tasks),
        "cache": str(cache),
    }
