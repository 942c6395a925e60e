"""The repro report: a Markdown table, learning curves, exponent traces, and the command."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omniflex.flex import plot_telemetry

__all__ = ["noise_verdict", "write_report"]

_COLOURS = {
    "float32": "#1f77b4", "flex16+5": "#d62728", "float16": "#2ca02c",
    "bfloat16": "#9467bd", "flex12+5": "#ff7f0e", "flex8+5": "#8c564b",
}  # fmt: skip


def _smooth(values: list[float], k: int = 15) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if len(v) < k:
        return v
    kernel = np.ones(k) / k
    return np.convolve(np.pad(v, (k // 2, k - 1 - k // 2), mode="edge"), kernel, mode="valid")


def noise_verdict(reference: list[float], value: float) -> dict[str, Any]:
    """Where ``value`` lies relative to the spread of float32 seeds ``reference``."""
    lo, hi = min(reference), max(reference)
    spread = hi - lo
    mean = float(np.mean(reference))
    if not math.isfinite(value):
        return {"inside": False, "text": "diverged", "mean": mean, "spread": spread}
    inside = lo <= value <= hi
    if inside:
        text = "within float32 seed spread"
    else:
        gap = (lo - value) if value < lo else (value - hi)
        units = f"{gap / spread:.1f}x the spread" if spread > 0 else f"{gap:.4g}"
        text = (
            f"{'better' if value < lo else 'worse'} than every float32 seed by {gap:.4g} ({units})"
        )
    return {"inside": inside, "text": text, "mean": mean, "spread": spread}


def _fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.4f}"


def _curve(run: dict[str, Any], key: str) -> list[float]:
    return run["losses"] if key == "losses" else run["extra_curves"].get(key, [])


def _scale_axis(ax: Any, runs: list[dict[str, Any]], key: str) -> None:
    """Log scale for positive losses; the y range follows float32, so a diverged run (flex8+5,
    float16) runs off the top instead of squashing every other curve."""
    ref = [v for r in runs if r["format"] == "float32" for v in _curve(r, key) if math.isfinite(v)]
    if not ref:
        return
    lo, hi = min(ref), max(ref)
    if key == "losses" and lo > 0:
        ax.set_yscale("log")
        ax.set_ylim(lo / 1.5, hi * 1.5)
    else:
        pad = 0.25 * (hi - lo or 1.0)
        ax.set_ylim(lo - pad, hi + pad)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_runs(ax: Any, runs: list[dict[str, Any]], key: str, per_seed_labels: bool) -> None:
    """Smoothed curves, float32 seeds thin; then the axis scaled to float32's range."""
    for r in runs:
        values = _curve(r, key)
        if not values:
            continue
        fp32 = r["format"] == "float32"
        if per_seed_labels:
            label = f"{r['format']} seed {r['seed']}" if fp32 else r["format"]
        else:
            label = None if r["seed"] else ("float32 (seeds)" if fp32 else r["format"])
        ax.plot(
            r["steps"][: len(values)], _smooth(values), color=_COLOURS.get(r["format"]),
            lw=0.9 if fp32 else 1.6, alpha=0.55 if fp32 else 0.95, label=label,
        )  # fmt: skip
    _scale_axis(ax, runs, key)


def _plot_experiment(data: dict[str, Any], folder: Path) -> list[Path]:
    plt = _pyplot()
    runs = data["runs"]
    panels = [("losses", "training loss")]
    if any("wasserstein" in r["extra_curves"] for r in runs):
        panels.append(("wasserstein", "Wasserstein estimate"))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        _plot_runs(ax, runs, key, per_seed_labels=True)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle(f"{data['experiment']}: {data['description']}", fontsize=9)
    fig.tight_layout()
    curves = folder / "curves.png"
    fig.savefig(curves, dpi=110)
    plt.close(fig)
    paths = [curves]
    for tel in sorted(folder.glob("flex*_telemetry.jsonl")):
        if tel.stat().st_size:
            paths.append(plot_telemetry(tel, tel.with_suffix(".png"), max_tensors=6))
    samples = sorted(folder.glob("*_samples.pt"))
    if samples:
        fig, axes = plt.subplots(1, len(samples), figsize=(3 * len(samples), 3.3), squeeze=False)
        for ax, path in zip(axes[0], samples, strict=True):
            imgs = torch.load(path)[:36].squeeze(1).numpy()
            n = int(math.sqrt(len(imgs)))
            grid = np.concatenate(
                [np.concatenate(list(imgs[r * n : (r + 1) * n]), 1) for r in range(n)], 0
            )
            ax.imshow(grid, cmap="gray", vmin=-1, vmax=1)
            ax.set_title(path.stem.removesuffix("_samples"), fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        grid_path = folder / "samples.png"
        fig.savefig(grid_path, dpi=110)
        plt.close(fig)
        paths.append(grid_path)
    return paths


def _summary_figure(datasets: list[dict[str, Any]], out: Path) -> Path:
    plt = _pyplot()

    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.6), squeeze=False)
    for ax, data in zip(axes[0], datasets, strict=True):
        key = "wasserstein" if data["experiment"] == "wgan" else "losses"
        _plot_runs(ax, data["runs"], key, per_seed_labels=False)
        what = "Wasserstein estimate" if key == "wasserstein" else "training loss"
        ax.set_title(f"{data['experiment']}: {what}", fontsize=10)
        ax.set_xlabel("step")
    legend: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=len(legend), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = out / "summary.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out: str | Path, command: str = "") -> Path:
    """(Re)write ``out/report.md`` from every ``out/*/results.json``."""
    out = Path(out)
    datasets = [json.loads(p.read_text()) for p in sorted(out.glob("*/results.json"))]
    if not datasets:
        raise FileNotFoundError(f"no results under {out}; run `omniflex flex repro` first")
    lines = [
        "# Flexpoint repro: flex16+5 vs float32, float16 and bfloat16",
        "",
        "Same model, seed, data order and hyperparameters in every format. float16 and bfloat16 "
        "are emulated (values rounded at every op boundary, weights and optimizer state rounded "
        "after every update, no loss scaling, no float32 master weights) — the paper's float16 "
        "baseline. Noise = the spread over the float32 seeds; other formats run the seeds listed.",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads.",
        "",
        f"Reproduce: `{command or 'omniflex flex repro all'}`",
        "",
        "![summary](summary.png)",
        "",
    ]
    for data in datasets:
        metric = data["metric"]
        runs = data["runs"]
        ref = [r["metrics"][metric] for r in runs if r["format"] == "float32"]
        metric_keys = list(dict.fromkeys(k for r in runs for k in r["metrics"]))
        lines += [f"## {data['experiment']}", "", data["description"] + ".", ""]
        lines.append(
            "| format | seed | " + " | ".join(metric_keys) + " | seconds | vs float32 noise |"
        )
        lines.append("|---" * (len(metric_keys) + 4) + "|")
        for r in runs:
            verdict = (
                "reference"
                if r["format"] == "float32"
                else noise_verdict(ref, r["metrics"][metric])["text"]
            )
            if r["diverged"]:
                verdict = f"diverged at step {r['steps'][-1] if r['steps'] else 0}; " + verdict
            cells = " | ".join(_fmt(r["metrics"].get(k, float("nan"))) for k in metric_keys)
            lines.append(
                f"| {r['format']} | {r['seed']} | {cells} | {r['seconds']:.0f} | {verdict} |"
            )
        spread = max(ref) - min(ref)
        lines += [
            "",
            f"Headline metric `{metric}` (lower is better); float32 mean {np.mean(ref):.4f}, "
            f"spread {spread:.4f} over {len(ref)} seeds.",
            "",
        ]
        by_format: dict[str, list[float]] = {}
        for r in runs:
            if r["format"] != "float32":
                by_format.setdefault(r["format"], []).append(r["metrics"][metric])
        multi = {f: v for f, v in by_format.items() if len(v) > 1}
        for fmt, values in multi.items():
            mean = float(np.mean(values))
            verdict = noise_verdict(ref, mean)["text"]
            lines.append(f"- {fmt}: mean {_fmt(mean)} over {len(values)} seeds — {verdict}.")
        if multi:
            lines.append("")
        folder = out / data["experiment"]
        for path in _plot_experiment(data, folder):
            lines.append(f"![{path.stem}]({path.relative_to(out)})")
        cfg = {k: v for k, v in data["config"].items() if k not in ("progress",)}
        lines += ["", f"Settings: `{json.dumps(cfg)}`", ""]
    _summary_figure(datasets, out)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
