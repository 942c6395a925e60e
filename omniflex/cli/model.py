"""``omniflex model export | list``: model folders, loaded by name or path by ``omniflex chat``,
``eval``, ``serve`` and ``generate``.

Each command imports what it runs when it runs, so that building the parser (every
``omniflex`` call, ``--help`` included) does not load the model.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parser"]


# The command and its one line in ``omniflex --help`` (listed without building the parser).
NAME = "model"
HELP = "list shipped models; export a training run as a model folder"


def _cmd_export(args: argparse.Namespace) -> int:
    from omniflex.train.export import export_run

    template = {"video_fps": args.video_fps, "text_chunk_tokens": args.text_chunk_tokens}
    out = export_run(args.run, args.out, name=args.name, template=template)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.1f} MB); talk to it: omniflex chat --model {out}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
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


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``omniflex model export | list`` on the top-level subparsers."""
    model = subparsers.add_parser(
        NAME,
        help=HELP,
        description="Model folders (config.json + flex16 model.safetensors + autoflex.json), "
        "loaded by name or path by `omniflex chat`, `eval`, `serve` and `generate`.",
    )
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    export = model_sub.add_parser(
        "export", help="write a model folder from a training run's latest checkpoint",
        description=(
            "Export the latest checkpoint of RUN (a run folder, its checkpoints/ or one step_* "
            "folder) as a model folder: weights as trained (flex16+5: int16 mantissas + "
            "exponents), Autoflex states, the model config, the chat template options and a "
            "training summary from metrics.jsonl. To ship it as the default: --out "
            "omniflex/assets/models/tiny."
        ),
    )  # fmt: skip
    export.add_argument("run", help="training run folder (e.g. runs/tiny)")
    export.add_argument("--out", required=True, help="model folder to write")
    export.add_argument("--name", help="model name (default: the folder's name)")
    export.add_argument(
        "--video-fps", type=float, default=1.0, help="video frames/s it was trained on"
    )
    export.add_argument(
        "--text-chunk-tokens", type=int, default=4, help="text ids per speech chunk"
    )
    export.set_defaults(func=_cmd_export)
    listing = model_sub.add_parser(
        "list",
        help="the shipped models, as JSON",
        description="List the models shipped in omniflex/assets/models with their precision, "
        "training steps and final validation loss.",
    )
    listing.set_defaults(func=_cmd_list)
    return model
