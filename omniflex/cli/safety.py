"""``omniflex safety train-voice | train-moderation | eval``: the safety layer's classifiers."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parser"]


# The command and its one line in ``omniflex --help`` (listed without building the parser).
NAME = "safety"
HELP = "train and evaluate the voice output classifier and moderation"


def _cmd_train_voice(args: argparse.Namespace) -> int:
    import torch

    from omniflex.safety.voice_classifier import SHIPPED
    from omniflex.safety.voice_train import VoiceTrainConfig, train_voice_classifier

    torch.set_num_threads(args.threads)
    options = {"steps": args.steps} if args.steps is not None else {}
    model = train_voice_classifier(args.corpus, args.out or SHIPPED, VoiceTrainConfig(**options))
    print(json.dumps({"out": str(args.out or SHIPPED), **model.metadata}, indent=2))
    return 0


def _cmd_train_moderation(args: argparse.Namespace) -> int:
    from omniflex.safety.moderation_train import train_moderation
    from omniflex.safety.policy import SHIPPED

    print(json.dumps(train_moderation(args.corpus, args.out or SHIPPED), indent=2))
    return 0


def _print_summary(result: dict[str, Any]) -> None:
    ref = result["reference"]
    voice = result["voice_classifier"]
    for condition in ("clean", "noise_10db"):
        v = voice[condition]
        print(
            f"voice {condition:<10} precision {v['precision']:.3f} (card {ref['voice_precision']})"
            f"  recall {v['recall']:.3f} (card {ref['voice_recall']})"
            f"  false blocks {v['false_block_rate']:.3f}"
        )
        for group, g in v["by_speaker_group"].items():
            print(f"  {group:<9} precision {g['precision']:.3f} recall {g['recall']:.3f}")
    cost = voice["chunk_cost"]
    print(
        f"voice chunk cost {cost['cpu_ms_mean']:.2f} ms CPU per {cost['chunk_ms']} ms (target 10)"
    )
    for name, m in result["moderation"].items():
        if isinstance(m, dict):
            print(
                f"moderation {name:<22} not-unsafe {m['not_unsafe']:.3f} "
                f"(goal {ref['disallowed_not_unsafe_goal']})  not-over-refuse "
                f"{m['not_over_refuse']:.3f} (goal {ref['disallowed_not_over_refuse_goal']})"
            )


def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from omniflex.eval.safety_classifiers import evaluate_safety_classifiers

    torch.set_num_threads(1)
    result = evaluate_safety_classifiers(Path(args.corpus), quick=args.quick)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_summary(result)
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``omniflex safety ...`` on the top-level parser's subparsers."""
    safety = subparsers.add_parser(
        NAME, help=HELP,
        description=(
            "The safety layer (GPT-4o system card mitigations): a streaming classifier that "
            "blocks spoken output which deviates from the session's preset voice, and text "
            "moderation of requests and answers (rules + a TF-IDF classifier)."
        ),
    )  # fmt: skip
    sub = safety.add_subparsers(dest="safety_command", metavar="ACTION", required=True)
    tv = sub.add_parser(
        "train-voice", help="train and calibrate the streaming output voice classifier",
        description=(
            "Train the output voice classifier on the corpus's train split: preset-voice speech "
            "is allowed; other presets, input voices and pitch-/speed-shifted presets are "
            "deviations; every clip is also passed through the shipped audio codec and mixed "
            "with background noise. The block threshold is calibrated on val streams "
            "(precision >= 0.96). Writes config.json + model.safetensors (default: the shipped "
            "omniflex/assets/safety/voice_classifier)."
        ),
    )  # fmt: skip
    tv.add_argument("--corpus", default="data/tiny", help="corpus folder (default: data/tiny)")
    tv.add_argument("--out", help="output folder (default: the shipped classifier's folder)")
    tv.add_argument("--steps", type=int, help="optimiser steps (default: 3000)")
    tv.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    tv.set_defaults(func=_cmd_train_voice)
    tm = sub.add_parser(
        "train-moderation", help="train the text moderation classifier",
        description=(
            "Fit the moderation classifier (TF-IDF word and character n-grams + logistic "
            "regression) on the corpus's train requests: task 'disallowed' is flagged, every "
            "other user text and transcript is allowed. The threshold is checked on val. "
            "Writes model.json (no pickle; default: omniflex/assets/safety/moderation)."
        ),
    )  # fmt: skip
    tm.add_argument("--corpus", default="data/tiny", help="corpus folder (default: data/tiny)")
    tm.add_argument("--out", help="output folder (default: the shipped moderation folder)")
    tm.set_defaults(func=_cmd_train_moderation)
    ev = sub.add_parser(
        "eval", help="measure the safety classifiers on the test split (against GPT-4o's)",
        description=(
            "On the corpus's test split (held-out voices lia and moss, held-out templates): "
            "voice classifier stream precision and recall, clean and at 10 dB SNR background "
            "noise, per speaker group (presets vs held-out voices); CPU ms per 80 ms chunk; "
            "moderation not-unsafe and not-over-refuse, also on ASR-like noisy text. The GPT-4o "
            "system card's figures are printed beside ours."
        ),
    )  # fmt: skip
    ev.add_argument("--corpus", default="data/tiny", help="corpus folder (default: data/tiny)")
    ev.add_argument("--quick", action="store_true", help="fewer test clips (a smoke run)")
    ev.add_argument("--json", action="store_true", help="print all figures as JSON")
    ev.set_defaults(func=_cmd_eval)
    return safety
