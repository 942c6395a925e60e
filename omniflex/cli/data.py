"""``omniflex data build | extend | convert | tokenize``: the omni corpus as WebDataset shards,
and its token caches for training.

Each command imports what it runs when it runs, so that building the parser (every
``omniflex`` call, ``--help`` included) does not load the generators, the model or the
tokenizers' weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_parser", "balance_table"]


# The command and its one line in ``omniflex --help`` (listed without building the parser).
NAME = "data"
HELP = "build the synthetic omni corpus; convert public data sets"


def _cmd_build(args: argparse.Namespace) -> int:
    from omniflex.data.build import build_corpus

    card = build_corpus(args.size, args.out, seed=args.seed, workers=args.workers)
    print(
        f"wrote {card['samples']} samples in {len(card['shards'])} shards to {args.out} "
        f"({card['speech_hours']} h speech, {card['images']} images, {card['videos']} videos); "
        f"data card: {args.out}/data_card.md"
    )
    return 0


def _cmd_extend(args: argparse.Namespace) -> int:
    from omniflex.data.build import extend_corpus

    counts = {}
    for item in args.train:
        task, _, n = item.partition("=")
        try:
            counts[task] = int(n)
        except ValueError:
            raise SystemExit(
                f"omniflex data extend: --train takes TASK=COUNT (e.g. asr=14000), got {item!r}"
            ) from None
    card = extend_corpus(args.corpus, counts, workers=args.workers)
    print(
        f"{args.corpus} now holds {card['samples']} samples in {len(card['shards'])} shards; "
        f"training counts extended to {card['train_extended']}; data card: "
        f"{args.corpus}/data_card.md"
    )
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from omniflex.data.adapters import convert_dataset

    report = convert_dataset(args.dataset, args.source, args.out, strict=args.strict)
    print(
        f"converted {report.converted} samples from {args.source} into {len(report.shards)} shards"
    )
    if report.skipped:
        print(f"skipped {len(report.skipped)} unreadable items:", file=sys.stderr)
        for line in report.skipped[:20]:
            print(f"  {line}", file=sys.stderr)
    return 0


def _cmd_tokenize(args: argparse.Namespace) -> int:
    from omniflex.model.chat import ChatTemplate
    from omniflex.model.pretokenize import pretokenize_corpus

    template = ChatTemplate.from_shipped(
        video_fps=args.video_fps, text_chunk_tokens=args.text_chunk_tokens,
        input_features=args.inputs == "features",
    )  # fmt: skip
    out = args.out or f"{args.corpus}/tokens"
    metas = pretokenize_corpus(
        args.corpus, out, template, splits=args.split or ("train", "val", "test"),
        workers=args.workers, limit=args.limit, speech_as_asr=args.speech_as_asr,
    )  # fmt: skip
    for split, meta in metas.items():
        scalars = {k: v for k, v in meta.items() if not isinstance(v, (list, dict))}
        print(f"{split}: {json.dumps(scalars)}")
    if "train" in metas:
        print(balance_table(metas["train"]["loss_tokens_by_task"]))
    print(f"token caches in {out}/{{split}}/; statistics in {out}/{{split}}.json")
    return 0


def balance_table(by_task: dict[str, dict[str, int]]) -> str:
    """The training split's loss-bearing tokens per task and kind, with each task's share: what
    a recipe's task_weights rebalance."""
    kinds = ("text", "audio", "image", "special")
    total = sum(sum(k.values()) for k in by_task.values()) or 1
    lines = ["loss-bearing tokens (train):", f"{'task':<18}" + "".join(f"{k:>10}" for k in kinds)
             + f"{'share':>9}"]  # fmt: skip
    for task, counts in sorted(by_task.items(), key=lambda kv: -sum(kv[1].values())):
        share = sum(counts.values()) / total
        lines.append(f"{task:<18}" + "".join(f"{counts.get(k, 0):>10}" for k in kinds)
                     + f"{share:>9.1%}")  # fmt: skip
    return "\n".join(lines)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``omniflex data build | convert | tokenize`` on the top-level subparsers."""
    data = subparsers.add_parser(
        NAME, help=HELP,
        description="The omni corpus as WebDataset shards.",
    )  # fmt: skip
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    build = data_sub.add_parser(
        "build",
        help="generate the corpus (speech, scenes, digits, video, dialogue) as shards",
        description=(
            "Generate the omni corpus: sentences from a grammar over ~1,600 common words, "
            "spoken by espeak-ng in preset, input-only and held-out voices; scenes of shapes at "
            "several sizes; scikit-learn's handwritten digits; MP4 clips of moving shapes with "
            "narration; and the tasks built from them (recognition, speech, spoken QA, chat, "
            "captioning, VQA, text-to-image, video QA, multi-turn conversations, safety "
            "behaviours typed, spoken and in noise). Held-out sentences, question pairs, "
            "wordings, voices and scene pairs never reach training. Writes train/val/test "
            "WebDataset shards and a data card (with each task's share of the loss). Same seed, "
            "same bytes."
        ),
    )
    build.add_argument("--size", default="tiny", choices=["tiny", "small", "base"])
    build.add_argument("--out", default="data/tiny", help="output folder (default: %(default)s)")
    build.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    build.add_argument("--workers", type=int, help="worker processes (default: up to 4)")
    build.set_defaults(func=_cmd_build)
    extend = data_sub.add_parser(
        "extend",
        help="add training samples of some tasks to a built corpus",
        description=(
            "Add training samples of chosen tasks to a built corpus, e.g. more heard speech: "
            "`--train asr=14000` generates ASR samples from the current count up to 14,000 with "
            "the corpus's seed (the samples a corpus built with that count would hold) into "
            "train-<task>-from<k>-*.tar shards, which `omniflex data tokenize` reads with the "
            "rest. Validation and test never change; the data card records the extension."
        ),
    )
    extend.add_argument(
        "--corpus", default="data/tiny", help="corpus folder (default: %(default)s)"
    )
    extend.add_argument(
        "--train", action="append", required=True, metavar="TASK=COUNT",
        help="a task and its new number of training samples (repeatable)",
    )  # fmt: skip
    extend.add_argument("--workers", type=int, help="worker processes (default: up to 4)")
    extend.set_defaults(func=_cmd_extend)
    convert = data_sub.add_parser(
        "convert",
        help="convert LibriSpeech, LJSpeech or COCO captions on disk into shards",
        description=(
            "Convert a public data set that is already on disk into omniflex shards: speech "
            "becomes recognition samples, captions become captioning samples. Unreadable files "
            "are skipped and listed (or, with --strict, stop the conversion)."
        ),
    )
    convert.add_argument("dataset", choices=["librispeech", "ljspeech", "coco"])
    convert.add_argument("source", help="the data set's folder")
    convert.add_argument("--out", required=True, help="output folder for the shards")
    convert.add_argument("--strict", action="store_true", help="fail on the first unreadable file")
    convert.set_defaults(func=_cmd_convert)
    tokenize = data_sub.add_parser(
        "tokenize", help="turn the corpus's conversations into token caches for training",
        description=(
            "Run the chat template over every sample of the corpus with the shipped tokenizers "
            "(text BPE, image VQ, audio codec, video interleaving) and write one token cache per "
            "split (ids, loss masks, document offsets) plus per-task length statistics."
        ),
    )  # fmt: skip
    tokenize.add_argument(
        "--corpus", default="data/tiny", help="corpus folder (default: data/tiny)"
    )
    tokenize.add_argument("--out", help="output folder (default: CORPUS/tokens)")
    tokenize.add_argument(
        "--split", action="append", choices=["train", "val", "test"],
        help="only these splits (repeatable; default: all)",
    )  # fmt: skip
    tokenize.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    tokenize.add_argument("--limit", type=int, help="only the first N samples of each split")
    tokenize.add_argument(
        "--video-fps",
        type=float,
        default=1.0,
        help="video frames per second (default: 1; each frame is 256 image ids)",
    )
    tokenize.add_argument(
        "--text-chunk-tokens", type=int, default=4,
        help="text tokens per chunk in spoken answers, each followed by its audio (default: 4)",
    )  # fmt: skip
    tokenize.add_argument(
        "--inputs", choices=["features", "codes"], default="features",
        help=(
            "how the user's speech and pictures enter the model: 'features' (log-mel frames "
            "and pixel patches through the input encoders; the default model) or 'codes' "
            "(codec and VQ ids, as the first model read them)"
        ),
    )  # fmt: skip
    tokenize.add_argument(
        "--speech-as-asr", action="store_true",
        help=(
            "also write every spoken answer of the train split as an ASR document (task "
            "speech_asr: its audio, an ASR instruction, its transcript): more heard speech"
        ),
    )  # fmt: skip
    tokenize.set_defaults(func=_cmd_tokenize)
    return data
