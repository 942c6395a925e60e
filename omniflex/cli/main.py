"""``omniflex``: one subcommand per job. Run ``omniflex <command> --help`` for details."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from omniflex import __version__


def _cmd_flex_demo(args: argparse.Namespace) -> int:
    from omniflex.cli.flex_demo import format_summary, run_demo

    result = run_demo(args.out, steps=args.steps, seed=args.seed, recipe=args.recipe)
    print(format_summary(result))
    return 0


def _cmd_flex_plot(args: argparse.Namespace) -> int:
    from omniflex.flex import plot_telemetry

    out = args.out or str(args.telemetry).removesuffix(".jsonl") + ".png"
    path = plot_telemetry(args.telemetry, out, tensors=args.tensor, max_tensors=args.max_tensors)
    print(f"wrote {path}")
    return 0


def _cmd_flex_repro(args: argparse.Namespace) -> int:
    from omniflex.eval.flex_repro import EXPERIMENTS, run_repro

    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    overrides = {
        k: v
        for k, v in {
            "formats": tuple(args.formats) if args.formats else None,
            "seeds": args.seeds, "other_seeds": args.other_seeds, "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr, "depth": args.depth, "width": args.width,
            "train_size": args.train_size, "test_size": args.test_size, "device": args.device,
            "telemetry_every": args.telemetry_every,
        }.items()
        if v is not None
    }  # fmt: skip
    if args.smoke:
        overrides = {"steps": 3, "batch_size": 8, "seeds": 2, "train_size": 64,
                     "test_size": 32, "telemetry_every": 1, **overrides}  # fmt: skip
    command = (
        "omniflex " + " ".join(sys.argv[1:]) if args.command_line is None else args.command_line
    )
    report = run_repro(names, args.out, command=command, **overrides)
    print(f"wrote {report}")
    return 0


def _cmd_data_build(args: argparse.Namespace) -> int:
    from omniflex.data.build import build_corpus

    card = build_corpus(args.size, args.out, seed=args.seed, workers=args.workers)
    print(
        f"wrote {card['samples']} samples in {len(card['shards'])} shards to {args.out} "
        f"({card['speech_hours']} h speech, {card['images']} images, {card['videos']} videos); "
        f"data card: {args.out}/data_card.md"
    )
    return 0


def _cmd_data_convert(args: argparse.Namespace) -> int:
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


def _cmd_data_tokenize(args: argparse.Namespace) -> int:
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
        print(_balance_table(metas["train"]["loss_tokens_by_task"]))
    print(f"token caches in {out}/{{split}}/; statistics in {out}/{{split}}.json")
    return 0


def _balance_table(by_task: dict[str, dict[str, int]]) -> str:
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


def _cmd_bench_flex(args: argparse.Namespace) -> int:
    from omniflex.flex.bench import run_flex_benchmarks

    results = run_flex_benchmarks(args.only)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, value in results.items():
            ratio = value.get("ratio") if isinstance(value, dict) else None
            goal = value.get("goal", "") if isinstance(value, dict) else ""
            shown = f"{ratio:.3f} (goal {goal})" if ratio is not None else json.dumps(value)
            print(f"{name:<24} {shown}")
    return 0


def _cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from omniflex.cli.tokenizer import print_report, train

    meta = train(
        args.kind, args.corpus, args.out, steps=args.steps, precision=args.precision,
        threads=args.threads,
    )  # fmt: skip
    print_report(meta, args.json)
    return 0


def _cmd_tokenizer_roundtrip(args: argparse.Namespace) -> int:
    from omniflex.cli.tokenizer import print_report, roundtrip

    print_report(roundtrip(args.file, args.tokenizer, args.out), args.json)
    return 0


def _cmd_bench_tokenizers(args: argparse.Namespace) -> int:
    from omniflex.eval.tokenizer_bench import run_tokenizer_benchmarks

    results = run_tokenizer_benchmarks(args.corpus, only=args.only, quick=args.quick)
    print(json.dumps(results, indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from omniflex.train.run import train_main

    out_dir = train_main(args.recipe, args.overrides, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":
        print(f"run folder: {out_dir}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from omniflex.cli.generate import generate

    result = generate(
        args.model, args.prompt, audio=args.audio, image=args.image, voice=args.voice,
        out=args.out, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed, precision=args.precision,
    )  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0


def _cmd_model_export(args: argparse.Namespace) -> int:
    from omniflex.train.export import export_run

    template = {"video_fps": args.video_fps, "text_chunk_tokens": args.text_chunk_tokens}
    out = export_run(args.run, args.out, name=args.name, template=template)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.1f} MB); talk to it: omniflex chat --model {out}")
    return 0


def _cmd_model_list(args: argparse.Namespace) -> int:
    from omniflex.model.pretrained import available_models, read_info

    rows = []
    for name in available_models():
        info = read_info(name)
        training = info.get("training", {})
        rows.append({
            "name": name, "precision": info["model"]["precision"], "path": str(info.path),
            "steps": training.get("steps"), "final_val_loss": training.get("final_val_loss"),
        })  # fmt: skip
    print(json.dumps(rows, indent=2))
    return 0


def _cmd_bench_model(args: argparse.Namespace) -> int:
    from omniflex.model.bench import run_model_benchmarks

    print(json.dumps(run_model_benchmarks(args.only, threads=args.threads), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from omniflex.flex.bench import BENCHMARKS
    from omniflex.flex.config import RECIPES
    from omniflex.tokenizers.special import PRESET_VOICE_NAMES

    parser = argparse.ArgumentParser(
        prog="omniflex",
        description="Build, train and serve omni models in the Flexpoint number format.",
    )
    parser.add_argument("--version", action="version", version=f"omniflex {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    flex = sub.add_parser(
        "flex", help="Flexpoint tools: demo, telemetry plots",
        description="Flexpoint (flex16+5) tools.",
    )  # fmt: skip
    flex_sub = flex.add_subparsers(dest="flex_command", metavar="SUBCOMMAND", required=True)
    demo = flex_sub.add_parser(
        "demo",
        help="train an MLP in float32 and flex16+5 side by side; print losses, write plots",
        description=(
            "Train the same MLP on scikit-learn's handwritten digits in float32 and in Flexpoint "
            "(paper mode: no float32 master weights), with the same initial weights, batches and "
            "hyperparameters. Prints final losses and test accuracy; writes losses.png, "
            "exponents.png (Autoflex traces), flex_telemetry.jsonl and summary.json."
        ),
    )
    demo.add_argument(
        "--out", default="runs/flex-demo", help="output folder (default: %(default)s)"
    )
    demo.add_argument(
        "--steps", type=int, default=300, help="training steps (default: %(default)s)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument(
        "--recipe", default="flex16+5", choices=sorted(RECIPES),
        help="flex recipe for the flex run (default: %(default)s)",
    )  # fmt: skip
    demo.set_defaults(func=_cmd_flex_demo)

    plot = flex_sub.add_parser(
        "plot",
        help="draw exponent traces and overflow events from a telemetry JSONL file",
        description=(
            "Read a FlexTelemetry JSONL file and draw, per tensor, its Autoflex exponent over "
            "steps (overflow events marked x) and its unused headroom bits, as a PNG."
        ),
    )
    plot.add_argument("telemetry", help="telemetry .jsonl file written by FlexTelemetry")
    plot.add_argument("--out", help="PNG path (default: next to the telemetry file)")
    plot.add_argument(
        "--tensor", action="append",
        help="glob on tensor names to include, e.g. '*.grad_weight' (repeatable)",
    )  # fmt: skip
    plot.add_argument("--max-tensors", type=int, default=12, help="at most this many tensors")
    plot.set_defaults(func=_cmd_flex_plot)

    repro = flex_sub.add_parser(
        "repro",
        help="reproduce the Flexpoint paper: flex16+5 vs float32, float16, bfloat16",
        description=(
            "Train each experiment (resnet, alexnet, wgan, lm, or all) under each number format "
            "with the same seed and hyperparameters: float32 (several seeds, for the noise band), "
            "flex16+5 in the paper's mode, and emulated float16 and bfloat16 without loss "
            "scaling or master weights. Writes a report folder: report.md with a table, "
            "learning curves, Autoflex exponent traces and the command. Defaults are CPU-sized; "
            "--depth/--width/--steps/--train-size scale to paper size on a GPU (--device cuda)."
        ),
    )
    repro.add_argument("experiment", choices=["resnet", "alexnet", "wgan", "lm", "all"])
    repro.add_argument(
        "--out", default="reports/flex-repro", help="report folder (default: %(default)s)"
    )
    repro.add_argument(
        "--formats", nargs="+",
        help="formats to run (default: float32 flex16+5 float16 bfloat16; also flex12+5 flex8+5)",
    )  # fmt: skip
    repro.add_argument("--seeds", type=int, help="float32 seeds for the noise band (default 3)")
    repro.add_argument(
        "--other-seeds", type=int, help="seeds for every other format (default 1: seed 0)"
    )
    repro.add_argument("--steps", type=int, help="training steps (default: per experiment)")
    repro.add_argument("--batch-size", type=int, help="batch size (default: per experiment)")
    repro.add_argument("--lr", type=float, help="learning rate (default: per experiment)")
    repro.add_argument("--depth", type=int, help="ResNet depth 6n+2 (default 8; paper: 110)")
    repro.add_argument("--width", type=int, help="base width (default: per experiment)")
    repro.add_argument("--train-size", type=int, help="training images (default 8000)")
    repro.add_argument("--test-size", type=int, help="test images (default 2000)")
    repro.add_argument("--telemetry-every", type=int, help="flex telemetry interval (default 10)")
    repro.add_argument("--device", help="torch device (default cpu)")
    repro.add_argument("--smoke", action="store_true", help="a few steps per format (for tests)")
    repro.add_argument("--command-line", help=argparse.SUPPRESS)
    repro.set_defaults(func=_cmd_flex_repro)

    data = sub.add_parser(
        "data", help="build the synthetic omni corpus; convert public data sets",
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
    build.set_defaults(func=_cmd_data_build)
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
    convert.set_defaults(func=_cmd_data_convert)
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
    tokenize.set_defaults(func=_cmd_data_tokenize)

    trn = sub.add_parser(
        "train", help="train an omni model from a recipe (1 CPU process, or torchrun)",
        description=(
            "Train the omni transformer from a YAML recipe in recipes/ (tiny, tiny-float32, "
            "small-gpu, base-multigpu) or a path, with key=value overrides (e.g. steps=100 "
            "lr=1e-3 model_overrides.n_layers=2). Needs token caches: run `omniflex data "
            "tokenize` first. Writes metrics.jsonl, TensorBoard events and atomic checkpoints "
            "to the run folder; --resume continues bit for bit. For several processes: "
            "`torchrun --nproc_per_node 2 -m omniflex.train --recipe tiny`."
        ),
    )  # fmt: skip
    trn.add_argument("--recipe", default="tiny", help="recipe name or YAML path (default: tiny)")
    trn.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    trn.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    trn.set_defaults(func=_cmd_train)

    gen = sub.add_parser(
        "generate", help="one prompt to a trained omni model; answers saved as WAV/PNG",
        description=(
            "Send one user turn (text, and optionally an audio and/or an image file) to an omni "
            "model (the shipped default, a model folder or a training run) and print its "
            "answer. Spoken answers (--voice) and generated images are decoded and written to "
            "OUT; the result, with tokens/s, is printed as JSON."
        ),
    )  # fmt: skip
    gen.add_argument("prompt", nargs="?", help="the user's text")
    gen.add_argument(
        "--model", default="tiny",
        help="shipped model name, model folder, or training run folder (default: tiny)",
    )  # fmt: skip
    gen.add_argument(
        "--precision", choices=["float32"],
        help="run flex-trained weights dequantised in float32 (default: as trained)",
    )  # fmt: skip
    gen.add_argument("--audio", help="a WAV/FLAC file the user says")
    gen.add_argument("--image", help="a PNG/JPEG file the user shows")
    gen.add_argument("--voice", choices=list(PRESET_VOICE_NAMES), help="answer aloud in this voice")
    gen.add_argument("--out", default="runs/generate", help="where answers go (runs/generate)")
    gen.add_argument("--max-new-tokens", type=int, default=400)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=_cmd_generate)

    mdl = sub.add_parser(
        "model",
        help="list shipped models; export a training run as a model folder",
        description="Model folders (config.json + flex16 model.safetensors + autoflex.json), "
        "loaded by name or path by `omniflex chat`, `eval`, `serve` and `generate`.",
    )
    mdl_sub = mdl.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    mexp = mdl_sub.add_parser(
        "export", help="write a model folder from a training run's latest checkpoint",
        description=(
            "Export the latest checkpoint of RUN (a run folder, its checkpoints/ or one step_* "
            "folder) as a model folder: weights as trained (flex16+5: int16 mantissas + "
            "exponents), Autoflex states, the model config, the chat template options and a "
            "training summary from metrics.jsonl. To ship it as the default: --out "
            "omniflex/assets/models/tiny."
        ),
    )  # fmt: skip
    mexp.add_argument("run", help="training run folder (e.g. runs/tiny)")
    mexp.add_argument("--out", required=True, help="model folder to write")
    mexp.add_argument("--name", help="model name (default: the folder's name)")
    mexp.add_argument(
        "--video-fps", type=float, default=1.0, help="video frames/s it was trained on"
    )
    mexp.add_argument("--text-chunk-tokens", type=int, default=4, help="text ids per speech chunk")
    mexp.set_defaults(func=_cmd_model_export)
    mlist = mdl_sub.add_parser(
        "list",
        help="the shipped models, as JSON",
        description="List the models shipped in omniflex/assets/models with their precision, "
        "training steps and final validation loss.",
    )
    mlist.set_defaults(func=_cmd_model_list)

    from omniflex.cli.safety import add_parser as add_safety_parser

    add_safety_parser(sub)

    tok = sub.add_parser(
        "tokenizer", help="train tokenizers; round-trip a media file through one",
        description=(
            "Modality tokenizers: byte-level BPE for text, an FSQ VQ autoencoder for 64x64 "
            "images, a causal streaming audio codec (16 kHz, 25 frames/s, 2 codebooks), and "
            "video as time-interleaved image and audio codes."
        ),
    )  # fmt: skip
    tok_sub = tok.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    ttrain = tok_sub.add_parser(
        "train", help="train a tokenizer on the corpus's train split",
        description=(
            "Train the text, image or audio tokenizer and save it as a folder (config.json + "
            "model.safetensors in flex16, or tokenizer.json for text). Text and audio read the "
            "corpus (build it with `omniflex data build`); the image tokenizer renders its own "
            "scenes and uses scikit-learn's digits. Losses go to OUT/train_log.jsonl."
        ),
    )  # fmt: skip
    ttrain.add_argument("kind", choices=["text", "image", "audio"])
    ttrain.add_argument("--corpus", default="data/tiny", help="corpus folder (default: data/tiny)")
    ttrain.add_argument("--out", help="output folder (default: runs/tokenizers/KIND)")
    ttrain.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    ttrain.add_argument(
        "--precision", default="float32", choices=["float32", *RECIPES],
        help="train in float32 or in a Flexpoint recipe (default: float32)",
    )  # fmt: skip
    ttrain.add_argument("--threads", type=int, help="CPU threads (default: the recipe's)")
    ttrain.add_argument("--json", action="store_true", help="print the result as JSON")
    ttrain.set_defaults(func=_cmd_tokenizer_train)
    trt = tok_sub.add_parser(
        "roundtrip", help="encode and decode a file, write the reconstruction, print figures",
        description=(
            "Encode FILE to tokens and back with the shipped tokenizer of its kind (WAV/FLAC: "
            "audio codec; PNG/JPEG: image; MP4: video; .txt: text). The reconstruction is "
            "written next to FILE as FILE.recon.EXT; the figures (tokens, PSNR, mel-cepstral "
            "distortion, speaker similarity, exactness) are printed."
        ),
    )  # fmt: skip
    trt.add_argument("file", help="a WAV, FLAC, PNG, JPEG, MP4 or UTF-8 .txt file")
    trt.add_argument("--tokenizer", help="tokenizer folder or shipped name (default: by kind)")
    trt.add_argument("--out", help="where to write the reconstruction")
    trt.add_argument("--json", action="store_true", help="print the figures as JSON")
    trt.set_defaults(func=_cmd_tokenizer_roundtrip)

    bench = sub.add_parser(
        "bench", help="benchmarks that print ratios against float32",
        description="Benchmarks. Each compares against float32 in the same run.",
    )  # fmt: skip
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="SUITE", required=True)
    bflex = bench_sub.add_parser(
        "flex",
        help="Flexpoint speed, memory and SQNR against float32",
        description=(
            "Measure Flexpoint against float32 on this machine: quantise vs clone of 16M "
            "elements, forward+backward of a 1024x1024 Linear and of a small MLP, stored "
            "parameter bytes in paper mode, and SQNR (dB) of a Linear, Conv2d and Embedding. "
            f"Benchmarks: {', '.join(BENCHMARKS)}."
        ),
    )
    bflex.add_argument("--json", action="store_true", help="print the results as JSON")
    bflex.add_argument(
        "--only", action="append", choices=list(BENCHMARKS), help="run only these (repeatable)"
    )
    bflex.set_defaults(func=_cmd_bench_flex)
    btok = bench_sub.add_parser(
        "tokenizers",
        help="quality, latency and speed of the shipped tokenizers (JSON)",
        description=(
            "Measure the shipped tokenizers on the corpus's held-out test split against the "
            "targets: audio speaker similarity and mel-cepstral distortion, latency, streaming "
            "decode speed; image PSNR on scenes and digits and the scene judge's match rate; "
            "text round trip; video token rates. Prints JSON."
        ),
    )
    btok.add_argument("--corpus", default="data/tiny", help="corpus folder (default: data/tiny)")
    btok.add_argument(
        "--only", action="append", choices=["text", "image", "audio", "video"],
        help="run only these (repeatable)",
    )  # fmt: skip
    btok.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    btok.set_defaults(func=_cmd_bench_tokenizers)
    bmodel = bench_sub.add_parser(
        "model",
        help="omni transformer speed and memory: flex16 vs float32 vs Hugging Face GPT-2 (JSON)",
        description=(
            "Measure the tiny omni transformer on the shipped vocabulary, in one run: decode "
            "tokens/s at batch 1 with the KV cache against a Hugging Face transformers GPT-2 of "
            "the same layers, width, heads and vocabulary (needs `pip install transformers`), "
            "ours eagerly and through the compiled forward (compiled before timing; the "
            "compilation's seconds are reported; flex16+5 also without the int16 decode "
            "kernel, for its share); flex16+5 training step at the tiny recipe's batch "
            "(8 x 512, after 2 untimed warm-up steps) and inference step time against "
            "float32; flex16 weight and "
            "KV-cache bytes against float32. Prints JSON with each ratio beside its target."
        ),
    )
    bmodel.add_argument(
        "--only", action="append", choices=["memory", "decode", "inference_step", "train_step"],
        help="run only these (repeatable)",
    )  # fmt: skip
    bmodel.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    bmodel.set_defaults(func=_cmd_bench_model)

    from omniflex.cli import card as card_cli
    from omniflex.cli import chat as chat_cli
    from omniflex.cli import eval as eval_cli
    from omniflex.cli import serve as serve_cli

    serve_cli.add_bench_parser(bench_sub)
    eval_cli.add_parser(sub)
    chat_cli.add_parser(sub)
    serve_cli.add_parser(sub)
    card_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"omniflex: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
