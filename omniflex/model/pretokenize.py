"""Pretokenize a corpus once: every conversation through the chat template into a token cache.

Running the audio codec, the image tokenizer and the video reader on every step would cost the
trainer more than the model does on a CPU, so each split is encoded once into::

    out_dir/{split}/         the token cache (``omniflex.model.token_cache``):
        ids.npy              int32  (N,)      every document's ids, concatenated in shard order
        loss_mask.npy        uint8  (N,)      1 where the model is trained to predict the id
        offsets.npy          int64  (D + 1,)  document d is ids[offsets[d] : offsets[d + 1]]
        meta.json            format version, counts, largest id
        mel.npy, patches.npy …  the rows of input placeholders, when the template reads
                             media as features (``ChatTemplate(input_features=True)``)
    out_dir/{split}.json     what the cache holds: documents, tokens, loss_tokens,
                             tokens_by_kind (special / text / image / audio),
                             loss_tokens_by_task ({task: {kind: loss-bearing tokens}}), lengths and
                             by_task ({task: documents, mean, p95, max}), keys and doc_tasks
                             (per document, in order), seconds, the template's config

With ``speech_as_asr=True`` every spoken answer of a *training* conversation (the assistant's
audio in a preset voice, with its transcript) is also written as an ASR document of its own
(task ``speech_asr``: that audio, a training ASR instruction, the transcript as the answer), so
the model hears several times more speech with its words than the ASR task alone gives.
Validation and test splits are never augmented.

``omniflex.train.TokenDataset(out_dir / split, seq_len)`` reads the cache. The cache folder is
renamed into place whole; ``{split}.json`` is written after it (temporary file + rename), so a
``{split}.json`` always describes the cache beside it.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from omniflex.common.files import write_json
from omniflex.data.shards import read_shard
from omniflex.data.templates import TEMPLATES, template_ids
from omniflex.model.chat import ChatFormatError, ChatTemplate
from omniflex.model.encoders import InputFeatures
from omniflex.model.token_cache import write_token_cache
from omniflex.tokenizers import special

__all__ = ["SPEECH_ASR_TASK", "pretokenize_corpus", "speech_as_asr"]


@dataclass
class _Doc:
    key: str
    task: str
    ids: list[int]
    loss_mask: list[int]
    features: InputFeatures | None = None


# Set in each worker process by _init_worker (forked: the template is inherited, not pickled).
_TEMPLATE: ChatTemplate | None = None


def _init_worker(template: ChatTemplate) -> None:
    global _TEMPLATE
    torch.set_num_threads(1)
    _TEMPLATE = template


SPEECH_ASR_TASK = "speech_asr"


def speech_as_asr(conversation: dict[str, Any]) -> list[dict[str, Any]]:
    """One ASR conversation per spoken answer of ``conversation`` (its audio file, a training
    ASR instruction chosen by the answer's place, its transcript written out as the answer)."""
    instructions = [TEMPLATES["asr"][i] for i in template_ids("asr", "train")]
    out = []
    for m, message in enumerate(conversation.get("messages", [])):
        if message.get("role") != "assistant" or not isinstance(message.get("content"), list):
            continue
        for part in message["content"]:
            if part.get("type") != "audio" or not part.get("transcript"):
                continue
            instruction = instructions[(m + len(out)) % len(instructions)]
            out.append({
                "id": f"{conversation.get('id', 'conversation')}_speech_asr_{len(out)}",
                "task": SPEECH_ASR_TASK,
                "messages": [
                    {"role": "user", "content": [
                        {"type": "audio", "file": part["file"]},
                        {"type": "text", "text": instruction},
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": part["transcript"]},
                    ]},
                ],
            })  # fmt: skip
    return out


def _encode_samples(
    template: ChatTemplate, shard: Path, limit: int | None, reuse_speech: bool = False
) -> Iterator[_Doc]:
    for i, sample in enumerate(read_shard(shard)):
        if limit is not None and i >= limit:
            return
        extra = speech_as_asr(sample.conversation) if reuse_speech else []
        for conversation in [sample.conversation, *extra]:
            try:
                encoded = template.encode(conversation, sample.files)
            except ChatFormatError as err:
                raise ChatFormatError(f"{shard}, sample {sample.key}: {err}") from None
            task = str(conversation.get("task", "unknown"))
            key = sample.key if conversation is sample.conversation else conversation["id"]
            yield _Doc(key, task, encoded.ids, encoded.loss_mask, encoded.features())


def _encode_shard(job: tuple[Path, int | None, bool]) -> list[_Doc]:
    if _TEMPLATE is None:
        raise RuntimeError("pretokenize worker started without _init_worker")
    return list(_encode_samples(_TEMPLATE, *job))


def _split_shards(corpus_dir: Path, split: str) -> list[Path]:
    shards = sorted(corpus_dir.glob(f"{split}-*.tar"))
    if not shards:
        found = sorted(p.name for p in corpus_dir.glob("*.tar"))[:6]
        raise FileNotFoundError(
            f"no '{split}-*.tar' shards in {corpus_dir} (found {found or 'no shards'}); "
            f"build the corpus with `omniflex data build --out {corpus_dir}`"
        )
    return shards


def _docs(
    template: ChatTemplate,
    shards: Sequence[Path],
    *,
    workers: int,
    limit: int | None,
    progress: bool,
    desc: str,
    reuse_speech: bool = False,
) -> Iterator[_Doc]:
    if limit is not None:
        # A subset is for measuring: read shards in order until ``limit`` documents.
        bar = tqdm(total=limit, desc=desc, unit="doc", disable=not progress)
        left = limit
        for shard in shards:
            for doc in _encode_samples(template, shard, left, reuse_speech):
                left -= doc.task != SPEECH_ASR_TASK  # ``limit`` counts corpus samples
                bar.update()
                yield doc
            if left == 0:
                break
        bar.close()
        return
    if workers <= 1:
        bar = tqdm(desc=desc, unit="doc", disable=not progress)
        for shard in shards:
            for doc in _encode_samples(template, shard, None, reuse_speech):
                bar.update()
                yield doc
        bar.close()
        return
    # Fork: workers inherit the loaded tokenizers instead of unpickling them.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, context, _init_worker, (template,)) as pool:
        bar = tqdm(total=len(shards), desc=desc, unit="shard", disable=not progress)
        jobs = [(shard, None, reuse_speech) for shard in shards]
        for docs in pool.map(_encode_shard, jobs):
            bar.update()
            yield from docs
        bar.close()


def _kind_counts(ids: np.ndarray, template: ChatTemplate) -> dict[str, int]:
    layout = template.layout
    return {
        "special": int((ids < special.NUM_SPECIAL).sum()),
        "text": int(((ids >= special.NUM_SPECIAL) & (ids < layout.text_size)).sum()),
        "image": int(((ids >= layout.image_offset) & (ids < layout.audio_offset)).sum()),
        "audio": int((ids >= layout.audio_offset).sum()),
    }


def _length_stats(lengths: Iterable[int]) -> dict[str, float | int]:
    values = np.asarray(list(lengths), dtype=np.int64)
    return {
        "documents": int(values.size),
        "mean": round(float(values.mean()), 1),
        "p95": int(np.percentile(values, 95)),
        "max": int(values.max()),
    }


def pretokenize_corpus(
    corpus_dir: str | Path,
    out_dir: str | Path,
    template: ChatTemplate,
    splits: Sequence[str] = ("train", "val", "test"),
    workers: int = 1,
    progress: bool = True,
    *,
    limit: int | None = None,
    speech_as_asr: bool = False,
) -> dict[str, dict[str, Any]]:
    """Encode every sample of ``corpus_dir/{split}-*.tar`` into ``out_dir/{split}/`` (the token
    cache) and ``out_dir/{split}.json`` (its statistics).

    Args:
        corpus_dir: a corpus built by ``omniflex data build`` (WebDataset shards).
        out_dir: where the caches go (created; caches of these splits are replaced).
        template: the ``ChatTemplate`` (its config is stored in each ``{split}.json``).
        splits: which splits to encode.
        workers: processes, one shard at a time each (forked; 1 = in this process).
        progress: show a tqdm bar per split.
        limit: encode only the first ``limit`` samples of each split, in shard order and in
            this process (for measuring speed and lengths on a subset).
        speech_as_asr: also write every spoken answer of the *train* split as an ASR document
            (task ``speech_asr``; see the module docstring).

    Returns:
        ``{split: meta}``, the contents of each ``{split}.json``.

    Raises ``ChatFormatError`` naming the shard and sample for a conversation that does not
    fit the format, ``FileNotFoundError`` for a split without shards.
    """
    corpus, out = Path(corpus_dir), Path(out_dir)
    if workers < 1:
        raise ValueError(f"pretokenize_corpus: workers must be >= 1, got {workers}")
    if limit is not None and limit < 1:
        raise ValueError(f"pretokenize_corpus: limit must be None or >= 1, got {limit}")
    if not corpus.is_dir():
        raise FileNotFoundError(
            f"corpus folder {corpus} does not exist; build it with `omniflex data build`"
        )
    shards_by_split = {split: _split_shards(corpus, split) for split in splits}  # fail early
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for split, shards in shards_by_split.items():
        start = time.perf_counter()
        keys: list[str] = []
        doc_tasks: list[str] = []
        lengths: list[int] = []
        kinds = dict.fromkeys(("special", "text", "image", "audio"), 0)
        loss_kinds: dict[str, dict[str, int]] = {}

        def pairs(
            docs: Iterable[_Doc],
            keys=keys,
            doc_tasks=doc_tasks,
            lengths=lengths,
            kinds=kinds,
            loss_kinds=loss_kinds,
        ) -> Iterator[tuple[list[int], list[int]]]:
            # Bookkeeping on the way into write_token_cache, which stores only ids and masks.
            for doc in docs:
                keys.append(doc.key)
                doc_tasks.append(doc.task)
                lengths.append(len(doc.ids))
                ids = np.asarray(doc.ids)
                for kind, n in _kind_counts(ids, template).items():
                    kinds[kind] += n
                by_kind = loss_kinds.setdefault(doc.task, dict.fromkeys(kinds, 0))
                loss_ids = ids[np.asarray(doc.loss_mask, dtype=bool)]
                for kind, n in _kind_counts(loss_ids, template).items():
                    by_kind[kind] += n
                yield doc.ids, doc.loss_mask, doc.features

        docs = _docs(template, shards, workers=workers, limit=limit, progress=progress,
                     desc=split, reuse_speech=speech_as_asr and split == "train")  # fmt: skip
        cache = write_token_cache(out / split, pairs(docs))
        seconds = time.perf_counter() - start
        tasks = sorted(set(doc_tasks))
        task_index = {t: i for i, t in enumerate(tasks)}
        meta = {
            "split": split,
            "cache": str(out / split),
            "corpus": str(corpus),
            "shards": [s.name for s in shards],
            "limit": limit,
            "documents": cache["documents"],
            "tokens": cache["tokens"],
            "loss_tokens": cache["loss_tokens"],
            "tokens_by_kind": kinds,
            # what the model is trained to write, per task and kind: the task balance
            "loss_tokens_by_task": dict(sorted(loss_kinds.items())),
            "lengths": _length_stats(lengths),
            "by_task": {
                task: _length_stats(n for n, t in zip(lengths, doc_tasks, strict=True) if t == task)
                for task in tasks
            },
            "seconds": round(seconds, 2),
            "docs_per_second": round(len(keys) / seconds, 2),
            "template": template.config(),
            "speech_as_asr": bool(speech_as_asr and split == "train"),
            "tasks": tasks,
            "doc_tasks": [task_index[t] for t in doc_tasks],
            "keys": keys,
        }
        write_json(out / f"{split}.json", meta)
        results[split] = meta
    return results
