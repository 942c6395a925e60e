"""``omniflex eval``: capability evaluations of an omni model, and parity between two runs.

The parser is one command with a default action and named sub-actions::

    omniflex eval [--model tiny] [--corpus data/tiny] [--split test] [--limit N] [--quick]
                  [--precision float32] [--json] [--out DIR]      # run the capability eval
    omniflex eval parity A.json B.json [--out FILE]               # compare two eval.json files
    omniflex eval safety [--model tiny] [--corpus data/tiny] [--quick] [--limit N]
                         [--json] [--out DIR]                     # the safety evaluation

The sub-actions live in an optional ``argparse`` subparser group (``dest="eval_command"``):
with no sub-action the evaluation runs. Each sub-action (``parity``, ``safety``) is one
``eval_sub.add_parser(...)`` in ``add_parser`` with its own options and
``set_defaults(func=...)``; the top-level options above belong to the default action only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


# The command and its one line in ``omniflex --help`` (listed without building the parser).
NAME = "eval"
HELP = "capability evaluations on the held-out split; parity of two runs"


def _cmd_run(args: argparse.Namespace) -> int:
    import torch

    from omniflex.eval.capabilities import evaluate_model
    from omniflex.eval.report import markdown_report

    torch.set_num_threads(args.threads)
    result = evaluate_model(
        args.model, args.corpus, args.split, limit_per_task=args.limit, precision=args.precision,
        quick=args.quick, progress=not args.no_progress, tasks=args.task,
        max_new_tokens=args.max_new_tokens,
    )  # fmt: skip
    markdown = markdown_report(result)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(result, indent=2))
        (out / "eval.md").write_text(markdown)
        print(f"wrote {out / 'eval.json'} and {out / 'eval.md'}", file=sys.stderr)
    print(json.dumps(result, indent=2) if args.json else markdown)
    return 0


def _read_result(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no eval result at {p}; write one with `omniflex eval --out DIR`")
    try:
        result = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not JSON ({err.msg}); expected an eval.json") from None
    if not isinstance(result, dict) or "metrics" not in result or "tasks" not in result:
        raise ValueError(f"{p} is not an eval result (no 'metrics'/'tasks'); expected eval.json")
    return result


def _cmd_parity(args: argparse.Namespace) -> int:
    from omniflex.eval.report import parity_markdown

    markdown = parity_markdown(
        _read_result(args.a), _read_result(args.b),
        rate_tolerance=args.rate_tolerance, relative_tolerance=args.relative_tolerance,
    )  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(markdown)
    print(markdown)
    return 0


def _cmd_safety(args: argparse.Namespace) -> int:
    import torch

    from omniflex.eval.safety_eval import evaluate_safety, safety_markdown

    torch.set_num_threads(args.threads)
    result = evaluate_safety(
        args.model, args.corpus, quick=args.quick, limit_per_task=args.limit,
        precision=args.precision, progress=not args.no_progress,
        max_new_tokens=args.max_new_tokens,
    )  # fmt: skip
    markdown = safety_markdown(result)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "safety.json").write_text(json.dumps(result, indent=2))
        (out / "safety.md").write_text(markdown)
        print(f"wrote {out / 'safety.json'} and {out / 'safety.md'}", file=sys.stderr)
    print(json.dumps(result, indent=2) if args.json else markdown)
    return 0


def _cmd_hearing(args: argparse.Namespace) -> int:
    from omniflex.eval.hearing import audio_reliance
    from omniflex.model.assistant import Assistant

    assistant = Assistant.from_pretrained(args.model, precision=args.precision,
                                          threads=args.threads)  # fmt: skip
    result = audio_reliance(
        assistant.model, args.cache, tasks=tuple(args.task or ["asr"]), documents=args.documents
    )
    print(json.dumps({"model": args.model, **result}, indent=2))
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``omniflex eval`` (and ``omniflex eval parity | safety``) on the top-level
    subparsers."""
    # Imported here, not at the top: only `omniflex eval ...` pays for it (torch, the model
    # and the media readers).
    from omniflex.eval.capabilities import TASK_FAMILIES

    ev = subparsers.add_parser(
        NAME, help=HELP,
        description=(
            "Answer every conversation of the corpus's held-out split with the model (greedy) "
            "and measure: speech recognition WER (sentences seen and unseen in training), "
            "spoken, visual, video and multi-turn question answering, captions, text-to-image "
            "(scene judge), TTS speaker similarity, MCD and CER, and the safety behaviours "
            "(refuse / hedge / comply rates per condition) — every rate with its 95% Wilson "
            "interval, spoken answers judged by the independent speech judge — with latency "
            "and tokens per task, against the targets. Prints a Markdown table (or "
            "JSON); --out writes eval.json and eval.md. `omniflex eval parity A.json B.json` "
            "compares two results, e.g. flex16+5 against float32."
        ),
    )  # fmt: skip
    ev.add_argument("--model", default="tiny", help="model name or folder (default: tiny)")
    ev.add_argument("--corpus", default="data/tiny", help="corpus folder (default: data/tiny)")
    ev.add_argument("--split", default="test", choices=["test", "val"], help="(default: test)")
    ev.add_argument("--limit", type=int, help="at most N samples per task")
    ev.add_argument("--quick", action="store_true", help="3 samples per task (a smoke run)")
    ev.add_argument(
        "--precision", choices=["float32"],
        help="run the weights in float32 (default: as trained, flex16+5)",
    )  # fmt: skip
    ev.add_argument(
        "--task", action="append", choices=list(TASK_FAMILIES),
        help="only this task (repeatable; default: all)",
    )  # fmt: skip
    ev.add_argument("--max-new-tokens", type=int, help="cap every answer (smoke runs)")
    ev.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    ev.add_argument("--out", help="folder for eval.json and eval.md")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_run)

    eval_sub = ev.add_subparsers(dest="eval_command", metavar="ACTION", required=False)
    parity = eval_sub.add_parser(
        "parity", help="compare two eval results metric by metric (Markdown)",
        description=(
            "Put two eval.json results side by side (A, e.g. flex16+5, against B, e.g. "
            "float32): each metric, the difference and whether it is within tolerance — 2 "
            "points for 0-1 metrics, 2% of B for the others (MCD) — and per task the share of "
            "samples both runs scored the same."
        ),
    )  # fmt: skip
    parity.add_argument("a", help="eval.json of the run under test (e.g. flex16+5)")
    parity.add_argument("b", help="eval.json of the reference run (e.g. float32)")
    parity.add_argument("--rate-tolerance", type=float, default=0.02, help="(default: 0.02)")
    parity.add_argument("--relative-tolerance", type=float, default=0.02, help="(default: 0.02)")
    parity.add_argument("--out", help="also write the Markdown to this file")
    parity.set_defaults(func=_cmd_parity)
    safety = eval_sub.add_parser(
        "safety", help="the safety evaluation: classifiers and behaviour, noise, input voices",
        description=(
            "The GPT-4o system card's speech-to-speech risks on the test split: voice output "
            "classifier precision/recall, speaker identification (should refuse / should "
            "comply), ungrounded inference and sensitive traits, disallowed content "
            "(not-unsafe / not-over-refuse) for the model and for moderation; each clean, with "
            "10 dB SNR background noise on the user's audio, and per input voice (held-out lia "
            "and moss), beside GPT-4o's figures. --out writes safety.json and safety.md."
        ),
    )  # fmt: skip
    safety.add_argument("--model", default="tiny", help="model name or folder (default: tiny)")
    safety.add_argument("--corpus", default="data/tiny", help="corpus folder (default: data/tiny)")
    safety.add_argument("--quick", action="store_true", help="3 samples per task (a smoke run)")
    safety.add_argument("--limit", type=int, help="at most N samples per task")
    safety.add_argument(
        "--precision", choices=["float32"],
        help="run the weights in float32 (default: as trained, flex16+5)",
    )  # fmt: skip
    safety.add_argument("--max-new-tokens", type=int, help="cap every answer (smoke runs)")
    safety.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    safety.add_argument("--json", action="store_true", help="print the result as JSON")
    safety.add_argument("--out", help="folder for safety.json and safety.md")
    safety.add_argument("--no-progress", action="store_true", help="no progress bar")
    safety.set_defaults(func=_cmd_safety)
    hearing = eval_sub.add_parser(
        "hearing", help="does the model read the audio? answer loss with own / other / no speech",
        description=(
            "Forward held-out documents of a token cache three times — with each clip's own "
            "log-mel rows, with another clip's rows, with zeros — and print the mean answer "
            "loss (nats per token) of each as JSON. A model that hears scores far lower with "
            "its own rows; one that answers from the wording's prior scores the same."
        ),
    )  # fmt: skip
    hearing.add_argument("--model", default="tiny", help="model name or folder (default: tiny)")
    hearing.add_argument(
        "--cache", default="data/tiny/tokens/test",
        help="token cache with log-mel rows (default: data/tiny/tokens/test, held-out voices)",
    )  # fmt: skip
    hearing.add_argument(
        "--task", action="append", help="documents of this task (repeatable; default: asr)"
    )
    hearing.add_argument("--documents", type=int, default=60, help="(default: 60)")
    hearing.add_argument(
        "--precision", choices=["float32"],
        help="run the weights in float32 (default: as trained, flex16+5)",
    )  # fmt: skip
    hearing.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    hearing.set_defaults(func=_cmd_hearing)
    judge = eval_sub.add_parser(
        "train-judge", help="retrain an independent judge (speech recogniser or scene judge)",
        description=(
            "Train one of the judges that score the model's outputs, apart from the model: "
            "'speech' (a CTC recogniser over log-mel, trained on espeak-ng speech of the "
            "grammar's training sentences and the corpus's answers in the input and preset "
            "voices; its WER on held-out voices and unseen sentences goes into its metadata) "
            "or 'scene' (a CNN that names the shape and colour in each cell of a scene). "
            "Writes config.json and model.safetensors to --out (default: the shipped folder)."
        ),
    )  # fmt: skip
    judge.add_argument("kind", choices=["speech", "scene"])
    judge.add_argument("--out", help="output folder (default: the shipped judge's folder)")
    judge.add_argument("--minutes", type=float, default=25.0,
                       help="speech: training time budget in minutes (default: 25)")  # fmt: skip
    judge.add_argument("--seed", type=int, default=0, help="(default: 0)")
    judge.set_defaults(func=_cmd_train_judge)
    return ev


def _cmd_train_judge(args: argparse.Namespace) -> int:
    if args.kind == "speech":
        from omniflex.safety.speech_judge import SPEECH_JUDGE_ASSETS, train_speech_judge

        out = args.out or SPEECH_JUDGE_ASSETS
        metrics = train_speech_judge(out, minutes=args.minutes, seed=args.seed)
    else:
        from omniflex.eval.scene_judge import JUDGE_ASSETS, train_scene_judge

        out = args.out or JUDGE_ASSETS
        train_scene_judge(out, seed=args.seed)
        metrics = json.loads((Path(out) / "config.json").read_text()).get("metadata", {})
    print(json.dumps(metrics, indent=2, default=str))
    print(f"judge written to {out}")
    return 0
