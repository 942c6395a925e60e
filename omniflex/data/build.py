"""``omniflex data build``: generate the omni corpus as WebDataset shards plus a data card."""

from __future__ import annotations

import json
import multiprocessing as mp
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from omniflex.data.shards import ShardWriter
from omniflex.data.tasks import TASKS, make_sample

__all__ = ["SIZES", "build_corpus"]

# Training samples per task; validation and test get a tenth each (at least 8).
SIZES: dict[str, dict[str, int]] = {
    "tiny": {
        "asr": 600,
        "tts": 400,
        "spoken_qa": 400,
        "text_chat": 300,
        "caption": 300,
        "vqa": 400,
        "text_to_image": 200,
        "digit": 200,
        "video_qa": 60,
        "speaker_id": 80,
        "trait_ungrounded": 60,
        "trait_hedge": 60,
        "quote": 60,
        "imitate": 60,
        "disallowed": 60,
    },
}
SIZES["small"] = {k: v * 5 for k, v in SIZES["tiny"].items()}
SIZES["base"] = {k: v * 50 for k, v in SIZES["tiny"].items()}
PER_SHARD = 200
# Token estimates for the data card: text BPE ~4 chars/token, audio 50 tokens/s in total across
# codebooks (the tokenizer issue's ceiling), images 64 codes (8x8 grid), video 2 fps of images.
AUDIO_TOKENS_PER_S, IMAGE_TOKENS, VIDEO_FPS = 50, 64, 2


@dataclass(frozen=True)
class _ShardJob:
    path: str
    items: tuple[tuple[str, str, int], ...]  # (task, split, index)
    seed: int


def _plan(size: str, out: Path, seed: int) -> list[_ShardJob]:
    jobs = []
    for split in ("train", "val", "test"):
        items = []
        for task in TASKS:
            n = SIZES[size][task] if split == "train" else max(8, SIZES[size][task] // 10)
            items.extend((task, split, i) for i in range(n))
        for s in range(0, len(items), PER_SHARD):
            path = out / f"{split}-{s // PER_SHARD:05d}.tar"
            jobs.append(_ShardJob(str(path), tuple(items[s : s + PER_SHARD]), seed))
    return jobs


def _empty_stats() -> dict[str, Any]:
    return {"tasks": Counter(), "voices": defaultdict(float), "tokens": Counter(),
            "images": 0, "videos": 0, "samples": 0}  # fmt: skip


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
            text = sum(
                len(p.get("text", ""))
                for m in sample.conversation["messages"]
                for p in m["content"]
            )
            stats["tokens"]["text"] += text // 4 + 1
            stats["tokens"]["audio"] += int(
                sum(sample.speech_seconds.values()) * AUDIO_TOKENS_PER_S
            )
            if "image.png" in sample.media:
                stats["images"] += 1
                stats["tokens"]["image"] += IMAGE_TOKENS
            if "video.mp4" in sample.media:
                stats["videos"] += 1
                stats["tokens"]["image"] += IMAGE_TOKENS * VIDEO_FPS * 3
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
    workers = workers or min(mp.cpu_count(), 4)
    totals = _empty_stats()
    # Always fresh "spawn" workers that import only the data layer: encoders such as libx264 can
    # make different (valid) choices in a process that has loaded other native libraries
    # (e.g. torch), and shard bytes must not depend on who called us.
    ctx = mp.get_context("spawn")
    bar = tqdm(
        total=len(jobs),
        desc=f"building {size} corpus",
        unit="shard",
        disable=None if progress else True,
    )
    with ctx.Pool(workers) as pool:
        for stats in pool.imap(_build_shard, jobs):
            for key in ("tasks", "tokens"):
                totals[key].update(stats[key])
            for voice, secs in stats["voices"].items():
                totals["voices"][voice] += secs
            for key in ("images", "videos", "samples"):
                totals[key] += stats[key]
            bar.update()
    bar.close()
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
    }
    (out / "data_card.json").write_text(json.dumps(card, indent=1))
    (out / "data_card.md").write_text(_card_markdown(card))
    return card


def _card_markdown(card: dict[str, Any]) -> str:
    from omniflex.data.voices import VOICES

    lines = [
        f"# omniflex corpus: {card['size']} (seed {card['seed']})",
        "",
        f"{card['samples']} samples in {len(card['shards'])} WebDataset shards; "
        f"{card['speech_hours']} h of speech, {card['images']} images, {card['videos']} videos.",
        "",
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
    lines += [
        "",
        "Held out: test scenes contain (colour, kind) pairs never seen in training; "
        "validation and test use templates and voices that training never uses.",
        "",
    ]
    return "\n".join(lines)
