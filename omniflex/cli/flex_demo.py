"""``omniflex flex demo``: train one MLP in float32 and in flex16+5 side by side.

Data: scikit-learn's real handwritten digits (8x8, ships inside the package). Both runs start
from the same weights, see the same batches and use the same hyperparameters; the flex run is
in the paper's mode (weights, activations, deltas, gradients, momentum and updates all flex16+5).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from omniflex.flex import FlexConfig, FlexSGD, FlexTelemetry, convert_to_flex, plot_telemetry

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    losses: dict[str, list[float]]
    test_accuracy: dict[str, float]
    out_dir: Path
    files: list[Path]


def _digits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0  # (1797, 64) in [0, 1]
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return x[:1500], y[:1500], x[1500:], y[1500:]


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )  # fmt: skip


def run_demo(
    out_dir: str | Path = "runs/flex-demo",
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 0.05,
    seed: int = 0,
    recipe: str = "flex16+5",
    progress: bool = True,
) -> DemoResult:
    """Train float32 and flex runs of the same MLP; write a loss plot, telemetry and a summary."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = _digits(seed)
    fp32 = _mlp()
    flex = convert_to_flex(copy.deepcopy(fp32), config=FlexConfig.from_recipe_name(recipe))
    runs: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {
        "float32": (fp32, torch.optim.SGD(fp32.parameters(), lr=lr, momentum=0.9)),
        recipe: (flex, FlexSGD(flex.parameters(), lr=lr, momentum=0.9)),
    }
    telemetry_path = out / "flex_telemetry.jsonl"
    telemetry_path.unlink(missing_ok=True)
    losses: dict[str, list[float]] = {name: [] for name in runs}
    batches = torch.Generator().manual_seed(seed + 1)
    loss_fn = nn.CrossEntropyLoss()
    with FlexTelemetry(telemetry_path, every=5) as telemetry:
        bar = tqdm(range(steps), desc="flex demo", disable=None if progress else True, unit="step")
        for step in bar:
            idx = torch.randint(0, len(x_train), (batch_size,), generator=batches)
            for name, (model, opt) in runs.items():
                loss = loss_fn(model(x_train[idx]), y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses[name].append(loss.item())
            telemetry.record(step, flex, runs[recipe][1])
            bar.set_postfix({k: f"{v[-1]:.3f}" for k, v in losses.items()})
    accuracy = {}
    with torch.no_grad():
        for name, (model, _) in runs.items():
            pred = model(x_test).argmax(-1)
            accuracy[name] = (pred == y_test).float().mean().item()
    files = [
        _plot_losses(losses, out / "losses.png"),
        plot_telemetry(telemetry_path, out / "exponents.png", max_tensors=8),
        telemetry_path,
    ]
    summary = {
        "steps": steps,
        "final_loss": {k: sum(v[-20:]) / len(v[-20:]) for k, v in losses.items()},
        "test_accuracy": accuracy,
        "recipe": recipe,
        "seed": seed,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    files.append(out / "summary.json")
    return DemoResult(losses, accuracy, out, files)


def _plot_losses(losses: dict[str, list[float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, values in losses.items():
        ax.plot(values, label=name, lw=1.2, alpha=0.85)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_title("Digits MLP: float32 vs Flexpoint, same init, data and hyperparameters")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_summary(result: DemoResult) -> str:
    lines = [f"{'format':<12} {'final loss':>10} {'test acc':>9}"]
    for name, values in result.losses.items():
        tail = values[-20:]
        lines.append(
            f"{name:<12} {sum(tail) / len(tail):>10.4f} {result.test_accuracy[name]:>9.3f}"
        )
    lines.append("wrote: " + ", ".join(str(p) for p in result.files))
    return "\n".join(lines)
