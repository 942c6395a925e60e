"""``omniflex data build``: generate the omni corpus as WebDataset shards plus a data card."""

from __future__ import annotations

import json
import multiprocessing as mp
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from omniflex.common.voices import VOICES
from omniflex.data.shards import ShardWriter
from omniflex.data.tasks import SAFETY_TASKS, TASKS, make_sample

__all__ = ["SIZES", "build_corpus", "extend_corpus", "iter_conversations", "split_count"]

# Training samples per task. Validation and test get a tenth each (at least 30), but the safety
# tasks get fixed held-out counts: 200 test samples per condition (typed, spoken, noisy), so each
# rate's 95% interval is about +-7 points at worst.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {
        "asr": 2000,
        "tts": 800,
        "spoken_qa": 800,
        "text_chat": 1200,
        "caption": 2000,
        "vqa": 3000,
        "text_to_image": 1200,
        "digit": 400,
        "video_qa": 240,
        "conversation": 1200,
        "speaker_id": 150,
        "trait_ungrounded": 120,
        "trait_hedge": 120,
        "quote": 150,
        "imitate": 120,
        "disallowed": 150,
        "benign": 150,
    },
}
SIZES["small"] = {k: v * 5 for k, v in SIZES["tiny"].items()}
SIZES["base"] = {k: v * 50 for k, v in SIZES["tiny"].items()}
SAFETY_HELD_OUT = {"val": 60, "test": 600}
PER_SHARD = 200
# Token estimates for the data card: text BPE ~4 chars/token, audio 50 tokens/s in total across
# codebooks (the tokenizer issue's ceiling), images 64 codes (8x8 grid), video 2 fps of images.
AUDIO_TOKENS_PER_S, IMAGE_TOKENS, VIDEO_FPS = 50, 64, 2


def split_count(size: str, task: str, split: str) -> int:
    """Samples of ``task`` in ``split`` for corpus ``size`` (held-out counts scale down with
    corpora smaller than ``tiny``, such as the tests' own)."""
    n = SIZES[size][task]
    if split == "train":
        return n
    if n < 100:
        return n
    return SAFETY_HELD_OUT[split] if task in SAFETY_TASKS else max(30, n // 10)


def iter_conversations(size: str, split: str, seed: int = 0) -> Iterator[dict[str, Any]]:
    """The conversations of ``split`` of corpus ``size``, in shard order, without synthesising or
    rendering any media: what ``build_corpus`` writes, less the media records (``augment``,
    ``seconds``). Seconds for a ``tiny`` split instead of minutes: for checks over the text."""
    if size not in SIZES:
        raise ValueError(f"unknown corpus size {size!r}; choose from {list(SIZES)}")
    for task, _, i in _items(size, split):
        yield make_sample(task, split, i, seed, media=False).conversation  # type: ignore[arg-type]


def _items(size: str, split: str) -> list[tuple[str, str, int]]:
    """``(task, split, index)`` of every sample of ``split``, in shard order."""
    return [(t, split, i) for t in TASKS for i in range(split_count(size, t, split))]


@dataclass(frozen=True)
class _ShardJob:
    path: str
    items: tuple[tuple[str, str, int], ...]  # (task, split, index)
    seed: int


def _plan(size: str, out: Path, seed: int) -> list[_ShardJob]:
    jobs = []
    for split in ("train", "val", "test"):
        items = _items(size, split)
        for s in range(0, len(items), PER_SHARD):
            path = out / f"{split}-{s // PER_SHARD:05d}.tar"
            jobs.append(_ShardJob(str(path), tuple(items[s : s + PER_SHARD]), seed))
    return jobs


def _empty_stats() -> dict[str, Any]:
    return {"tasks": Counter(), "voices": defaultdict(float), "tokens": Counter(),
            "train_tokens": defaultdict(Counter), "images": 0, "videos": 0,
            "samples": 0}  # fmt: skip


def _part_tokens(part: dict[str, Any]) -> tuple[str, int]:
    """(modality, estimated tokens) of one content part."""
    kind = part.get("type", "text")
    if kind == "text":
        return "text", len(part.get("text", "")) // 4 + 1
    if kind == "audio":
        return "audio", round(part.get("seconds", 0.0) * AUDIO_TOKENS_PER_S)
    if kind == "image":
        return "image", IMAGE_TOKENS
    seconds = part.get("seconds", 0.0)  # video: frames at VIDEO_FPS and the soundtrack
    return "video", round(IMAGE_TOKENS * VIDEO_FPS * seconds + AUDIO_TOKENS_PER_S * seconds)


def _build_shard(job: _ShardJob) -> dict[str, Any]:
    stats = _empty_stats()
    with ShardWriter(job.path) as writer:
        for task, split, index in job.items:
            sample = make_sample(task, split, index, job.seed)  # type: ignore[arg-type]
            writer.write(sample.key, sample.conversation, sample.media)
            stats["samples"] += 1
            stats["tasks"][f"{split}/{task}"] += 1
            for voice, secs in sample.speech_seconds.items():
                stats["voices"][voice] += secs
            for message in sample.conversation["messages"]:
                for part in message["content"]:
                    modality, n = _part_tokens(part)
                    stats["tokens"][modality] += n
                    stats["images"] += modality == "image"
                    stats["videos"] += modality == "video"
                    if split == "train":
                        role = "loss" if message["role"] == "assistant" else "input"
                        stats["train_tokens"][task][f"{role}/{modality}"] += n
    return stats


def build_corpus(
    size: str = "tiny",
    out: str | Path = "data/tiny",
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the corpus into ``out`` and write ``data_card.json`` / ``data_card.md`` beside it.

    Shard contents depend only on ``(size, seed)``, not on ``workers``.
    """
    if size not in SIZES:
        raise ValueError(f"unknown corpus size {size!r}; choose from {list(SIZES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = _plan(size, out, seed)
    totals = _run_jobs(jobs, workers, f"building {size} corpus", progress)
    card = {
        "size": size,
        "seed": seed,
        "shards": sorted(Path(j.path).name for j in jobs),
        "samples": totals["samples"],
        "samples_per_split_task": dict(sorted(totals["tasks"].items())),
        "speech_seconds_per_voice": {k: round(v, 1) for k, v in sorted(totals["voices"].items())},
        "speech_hours": round(sum(totals["voices"].values()) / 3600, 3),
        "images": totals["images"],
        "videos": totals["videos"],
        "token_estimate": dict(totals["tokens"]),
        "train_token_estimate_by_task": {
            t: dict(sorted(totals["train_tokens"][t].items())) for t in TASKS
        },
    }
    _write_card(out, card)
    return card


def extend_corpus(
    corpus: str | Path,
    train_counts: dict[str, int],
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Add training samples to a built corpus: ``train_counts`` gives the new number of
    training samples of each task (e.g. ``{"asr": 14000}``); the samples from the current count
    up to it are generated with the corpus's seed and written as ``train-<task>-from<k>-*.tar``
    shards, which ``omniflex data tokenize`` reads with the others. Held-out splits never
    change; the data card records the extension (``train_extended``) and counts its samples,
    voices and tokens. The samples are those a corpus built with the larger count would hold
    (sample ``i`` depends only on the task, split, index and seed).
    """
    out = Path(corpus)
    card_path = out / "data_card.json"
    if not card_path.is_file():
        raise FileNotFoundError(
            f"{out} holds no data_card.json: build the corpus first (`omniflex data build "
            f"--out {out}`), then extend it"
        )
    card = json.loads(card_path.read_text())
    size, seed = card["size"], int(card["seed"])
    extended = dict(card.get("train_extended", {}))
    jobs = []
    for task, n in train_counts.items():
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        have = int(extended.get(task, split_count(size, task, "train")))
        if n <= have:
            raise ValueError(
                f"{out} already holds {have} training samples of {task}; give a larger count"
            )
        items = [(task, "train", i) for i in range(have, n)]
        for s in range(0, len(items), PER_SHARD):
            path = out / f"train-{task}-from{have}-{s // PER_SHARD:05d}.tar"
            jobs.append(_ShardJob(str(path), tuple(items[s : s + PER_SHARD]), seed))
        extended[task] = n
    totals = _run_jobs(jobs, workers, f"extending {out}", progress)
    card["train_extended"] = extended
    card["shards"] = sorted({*card["shards"], *(Path(j.path).name for j in jobs)})
    card["samples"] += totals["samples"]
    per_task = Counter(card["samples_per_split_task"])
    per_task.update(totals["tasks"])
    card["samples_per_split_task"] = dict(sorted(per_task.items()))
    voices = Counter(card["speech_seconds_per_voice"])
    voices.update({k: round(v, 1) for k, v in totals["voices"].items()})
    card["speech_seconds_per_voice"] = {k: round(v, 1) for k, v in sorted(voices.items())}
    card["speech_hours"] = round(sum(voices.values()) / 3600, 3)
    for key in ("images", "videos"):
        card[key] += totals[key]
    card["token_estimate"] = dict(Counter(card["token_estimate"]) + totals["tokens"])
    by_task = card["train_token_estimate_by_task"]
    for task, counts in totals["train_tokens"].items():
        by_task[task] = dict(sorted((Counter(by_task.get(task, {})) + counts).items()))
    _write_card(out, card)
    return card


def _run_jobs(
    jobs: list[_ShardJob], workers: int | None, desc: str, progress: bool
) -> dict[str, Any]:
    """Write every shard of ``jobs`` and return their summed statistics."""
    workers = workers or min(mp.cpu_count(), 4)
    totals = _empty_stats()
    # Always fresh "spawn" workers that import only the data layer: encoders such as libx264 can
    # make different (valid) choices in a process that has loaded other native libraries
    # (e.g. torch), and shard bytes must not depend on who called us.
    ctx = mp.get_context("spawn")
    bar = tqdm(total=len(jobs), desc=desc, unit="shard", disable=None if progress else True)
    with ctx.Pool(workers) as pool:
        for stats in pool.imap(_build_shard, jobs):
            for key in ("tasks", "tokens"):
                totals[key].update(stats[key])
            for task, counts in stats["train_tokens"].items():
                totals["train_tokens"][task].update(counts)
            for voice, secs in stats["voices"].items():
                totals["voices"][voice] += secs
            for key in ("images", "videos", "samples"):
                totals[key] += stats[key]
            bar.update()
    bar.close()
    return totals


def _write_card(out: Path, card: dict[str, Any]) -> None:
    (out / "data_card.json").write_text(json.dumps(card, indent=1))
    (out / "data_card.md").write_text(_card_markdown(card))


def _balance_markdown(by_task: dict[str, dict[str, int]]) -> list[str]:
    """Training tokens per task: what the model reads, and what it is trained to write (the
    assistant's turns, which bear the loss), by modality, with each task's share of the loss."""
    modalities = ("text", "audio", "image", "video")
    total_loss = sum(n for c in by_task.values() for k, n in c.items() if k.startswith("loss/"))
    lines = [
        "",
        "## Task balance (training split, estimated tokens)",
        "",
        "Loss-bearing tokens are those of the assistant's turns. Estimates: text 4 characters a "
        f"token, audio {AUDIO_TOKENS_PER_S} tokens/s, {IMAGE_TOKENS} tokens an image; "
        "`omniflex data tokenize` reports the exact counts under the chat template.",
        "",
        "| task | input "
        + " | input ".join(modalities)
        + " | loss "
        + " | loss ".join(modalities)
        + " | share of loss |",
        "|---|" + "---|" * (2 * len(modalities) + 1),
    ]
    for task, counts in by_task.items():
        loss = sum(n for k, n in counts.items() if k.startswith("loss/"))
        cells = [str(counts.get(f"{r}/{m}", 0)) for r in ("input", "loss") for m in modalities]
        share = f"{loss / total_loss:.1%}" if total_loss else "-"
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {share} |")
    return lines


def _card_markdown(card: dict[str, Any]) -> str:
    lines = [
        f"# omniflex corpus: {card['size']} (seed {card['seed']})",
        "",
        f"{card['samples']} samples in {len(card['shards'])} WebDataset shards; "
        f"{card['speech_hours']} h of speech, {card['images']} images, {card['videos']} videos.",
        "",
    ]
    if card.get("train_extended"):
        grown = ", ".join(f"{t} to {n}" for t, n in card["train_extended"].items())
        lines += [f"Training split extended (`omniflex data extend`): {grown}.", ""]
    lines += [
        "## Samples per task",
        "",
        "| task | train | val | test |",
        "|---|---|---|---|",
    ]
    tasks = sorted({k.split("/")[1] for k in card["samples_per_split_task"]})
    for t in tasks:
        row = [
            str(card["samples_per_split_task"].get(f"{s}/{t}", 0)) for s in ("train", "val", "test")
        ]
        lines.append(f"| {t} | " + " | ".join(row) + " |")
    lines += [
        "",
        "## Speech per voice",
        "",
        "| voice | role | espeak-ng | seconds |",
        "|---|---|---|---|",
    ]
    for v in VOICES:
        lines.append(
            f"| {v.name} | {v.role} | {v.espeak} "
            f"| {card['speech_seconds_per_voice'].get(v.name, 0)} |"
        )
    lines += ["", "## Token estimate", "", "| stream | tokens |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in card["token_estimate"].items()]
    lines += _balance_markdown(card["train_token_estimate_by_task"])
    lines += [
        "",
        "Held out: sentences (by their text), arithmetic and counting pairs, request pairs and "
        "fact wordings; test scenes contain (colour, kind) pairs never seen in training; "
        "validation and test use templates and voices that training never uses, made of words "
        "that training uses.",
        "",
    ]
    return "\n".join(lines)
