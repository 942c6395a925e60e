"""The token cache: pre-tokenized documents as one folder of memory-mappable arrays.

The chat template turns each corpus conversation into ``(ids, loss_mask)``
(``omniflex.model.pretokenize``); ``write_token_cache`` stores a split of them as::

    <path>/ids.npy        int32  (N,)         every document's ids, concatenated
    <path>/loss_mask.npy  uint8  (N,)         1 where the token is a training target
    <path>/offsets.npy    int64  (D + 1,)     document d is ids[offsets[d]:offsets[d + 1]]
    <path>/meta.json      format version, token and document counts, largest id

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

__all__ = ["CACHE_VERSION", "read_sidecar", "write_token_cache"]

CACHE_VERSION = 1
_ID_LIMIT = 2**31 - 1


def write_token_cache(
    path: str | Path, docs: Iterable[tuple[Sequence[int], Sequence[int]]]
) -> dict[str, Any]:
    """Write ``(ids, loss_mask)`` documents as a token cache folder at ``path``; returns its meta.

    The folder is written beside ``path`` and renamed into place, so a reader never sees half a
    cache. An existing cache at ``path`` is replaced.
    """
    path = Path(path)
    ids_buf, mask_buf, offsets = array("i"), array("B"), array("q", [0])
    max_id = -1
    for d, (ids, mask) in enumerate(docs):
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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "ids.npy", np.frombuffer(ids_buf, dtype=np.int32))
    np.save(tmp / "loss_mask.npy", np.frombuffer(mask_buf, dtype=np.uint8))
    np.save(tmp / "offsets.npy", np.frombuffer(offsets, dtype=np.int64))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return meta


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The statistics ``pretokenize_corpus`` writes beside a cache (``<path>.json``), or ``{}``
    for a cache written without them."""
    sidecar = Path(f"{path}.json")
    return json.loads(sidecar.read_text()) if sidecar.is_file() else {}
