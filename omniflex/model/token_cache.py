"""The token cache: pre-tokenized documents as one folder of memory-mappable arrays.

The chat template turns each corpus conversation into ``(ids, loss_mask)``
(``omniflex.model.pretokenize``); ``write_token_cache`` stores a split of them as::

    <path>/ids.npy        int32  (N,)         every document's ids, concatenated
    <path>/loss_mask.npy  uint8  (N,)         1 where the token is a training target
    <path>/offsets.npy    int64  (D + 1,)     document d is ids[offsets[d]:offsets[d + 1]]
    <path>/meta.json      format version, token and document counts, largest id

and, when the documents carry continuous input features (``<|mel|>``/``<|patch|>``
placeholders; ``omniflex.model.encoders``), each placeholder's row, in document order::

    <path>/mel.npy            float16 (M, 320)  log-mel rows of the <|mel|> placeholders
    <path>/mel_offsets.npy    int64   (D + 1,)  document d's rows are mel[o[d]:o[d + 1]]
    <path>/patches.npy        uint8   (P, 192)  8x8-pixel patches of the <|patch|> placeholders
    <path>/patch_offsets.npy  int64   (D + 1,)  (a document's pictures are whole: 64 rows each)

and ``read_sidecar`` reads the statistics ``pretokenize_corpus`` writes beside it
(``<path>.json``: each document's task, the template and its vocabulary layout). The trainer
reads caches through ``omniflex.train.TokenDataset``; the format is owned here, below both.
"""

from __future__ import annotations

import json
import os
import shutil
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omniflex.model.encoders import MEL_ROW, PATCH_ROW
from omniflex.tokenizers import special

__all__ = ["CACHE_VERSION", "read_sidecar", "write_token_cache"]

CACHE_VERSION = 1
_ID_LIMIT = 2**31 - 1
_MEL_ID = special.special_index(special.MEL)
_PATCH_ID = special.special_index(special.PATCH)


def write_token_cache(
    path: str | Path,
    docs: Iterable[tuple[Sequence[int], Sequence[int]] | tuple[Sequence[int], Sequence[int], Any]],
) -> dict[str, Any]:
    """Write ``(ids, loss_mask)`` or ``(ids, loss_mask, features)`` documents (features: an
    ``InputFeatures`` or None) as a token cache folder at ``path``; returns its meta.

    The folder is written beside ``path`` and renamed into place, so a reader never sees half a
    cache. An existing cache at ``path`` is replaced.
    """
    path = Path(path)
    ids_buf, mask_buf, offsets = array("i"), array("B"), array("q", [0])
    mel_rows: list[np.ndarray] = []
    patch_rows: list[np.ndarray] = []
    mel_offsets, patch_offsets = array("q", [0]), array("q", [0])
    max_id = -1
    for d, (ids, mask, *rest) in enumerate(docs):
        features = rest[0] if rest else None
        if len(ids) != len(mask):
            raise ValueError(
                f"document {d}: ids has {len(ids)} tokens but loss_mask has {len(mask)}; the "
                "template must give one mask value per token"
            )
        if len(ids) == 0:
            continue
        doc_ids = np.asarray(ids, dtype=np.int64)
        doc_mask = np.asarray(mask)
        if doc_ids.min() < 0 or doc_ids.max() > _ID_LIMIT:
            raise ValueError(
                f"document {d}: token ids must be in [0, 2**31), "
                f"got {doc_ids.min()}..{doc_ids.max()}"
            )
        if not np.isin(doc_mask, (0, 1)).all():
            raise ValueError(f"document {d}: loss_mask values must be 0 or 1 (or bool)")
        ids_buf.extend(doc_ids.astype(np.int32).tolist())
        mask_buf.extend(doc_mask.astype(np.uint8).tolist())
        offsets.append(len(ids_buf))
        n_mel = n_patch = 0
        if features is not None:  # one row per placeholder, in order
            n_mel, n_patch = int((doc_ids == _MEL_ID).sum()), int((doc_ids == _PATCH_ID).sum())
            if (len(features.mel), len(features.patches)) != (n_mel, n_patch):
                raise ValueError(
                    f"document {d}: {n_mel} <|mel|> and {n_patch} <|patch|> placeholders but "
                    f"features for {len(features.mel)} and {len(features.patches)}; pass the "
                    "template's features() with its ids"
                )
            mel_rows.append(features.mel.numpy().astype(np.float16))
            patch_rows.append(features.patches.numpy().astype(np.uint8))
        mel_offsets.append(mel_offsets[-1] + n_mel)
        patch_offsets.append(patch_offsets[-1] + n_patch)
        max_id = max(max_id, int(doc_ids.max()))
    if len(offsets) == 1:
        raise ValueError(f"no non-empty documents to write to {path}")
    meta = {
        "version": CACHE_VERSION,
        "tokens": len(ids_buf),
        "documents": len(offsets) - 1,
        "loss_tokens": int(sum(mask_buf)),
        "max_id": max_id,
    }
    if mel_offsets[-1] or patch_offsets[-1]:
        meta.update(mel_rows=int(mel_offsets[-1]), patch_rows=int(patch_offsets[-1]))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "ids.npy", np.frombuffer(ids_buf, dtype=np.int32))
    np.save(tmp / "loss_mask.npy", np.frombuffer(mask_buf, dtype=np.uint8))
    np.save(tmp / "offsets.npy", np.frombuffer(offsets, dtype=np.int64))
    if mel_offsets[-1] or patch_offsets[-1]:
        np.save(tmp / "mel.npy", _rows(mel_rows, (0, MEL_ROW), np.float16))
        np.save(tmp / "mel_offsets.npy", np.frombuffer(mel_offsets, dtype=np.int64))
        np.save(tmp / "patches.npy", _rows(patch_rows, (0, PATCH_ROW), np.uint8))
        np.save(tmp / "patch_offsets.npy", np.frombuffer(patch_offsets, dtype=np.int64))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return meta


def _rows(parts: list[np.ndarray], empty: tuple[int, int], dtype: Any) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(empty, dtype)


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The statistics ``pretokenize_corpus`` writes beside a cache (``<path>.json``), or ``{}``
    for a cache written without them."""
    sidecar = Path(f"{path}.json")
    return json.loads(sidecar.read_text()) if sidecar.is_file() else {}
