"""Train each experiment under each number format with the same seed and hyperparameters."""

from __future__ import annotations

import functools
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from omniflex.common.schedule import warmup_cosine
from omniflex.eval.flex_repro.formats import FORMATS, make_optimizer, prepare_model
from omniflex.eval.flex_repro.models import (
    AlexNetSmall,
    Critic,
    DigitFeatureNet,
    Generator,
    ResNetCifar,
    TinyTransformerLM,
)
from omniflex.eval.flex_repro.report import write_report
from omniflex.eval.flex_repro.tasks import digits_16, shapes_cifar, template_text
from omniflex.flex import FlexTelemetry

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "ReproConfig",
    "RunResult",
    "frechet_distance",
    "run_experiment",
    "run_repro",
    "smoke_config",
]


@dataclass(frozen=True)
class ReproConfig:
    """One experiment's settings. ``None`` fields take the experiment's CPU-sized default.

    ``seeds`` float32 runs (seeds 0..seeds-1) give the noise band; every other format runs seeds
    0..other_seeds-1 (default just seed 0).
    Paper-sized: ``--depth 110 --width 16 --steps 64000 --train-size 50000`` on a GPU.
    """

    experiment: str
    formats: tuple[str, ...] = ("float32", "flex16+5", "float16", "bfloat16")
    seeds: int = 3
    other_seeds: int = 1
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    depth: int = 8
    width: int | None = None
    train_size: int = 8000
    test_size: int = 2000
    device: str = "cpu"
    telemetry_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        if self.experiment not in EXPERIMENTS:
            raise ValueError(
                f"unknown experiment {self.experiment!r}; choose from {list(EXPERIMENTS)}"
            )
        bad = [f for f in self.formats if f not in FORMATS]
        if bad:
            raise ValueError(f"unknown formats {bad}; choose from {FORMATS}")
        if "float32" not in self.formats:
            raise ValueError("formats must include float32: it is the reference")
        if self.seeds < 1 or self.other_seeds < 1:
            raise ValueError(
                f"seeds and other_seeds must be >= 1, got {self.seeds}, {self.other_seeds}"
            )
        for name in ("steps", "batch_size", "width"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")

    def value(self, name: str) -> Any:
        own = getattr(self, name)
        return EXPERIMENTS[self.experiment].defaults[name] if own is None else own


@dataclass
class RunResult:
    format: str
    seed: int
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    extra_curves: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    diverged: bool = False


def _cosine(opt: Any, step: int, total: int, base_lr: float) -> None:
    """Linear warm-up over the first 5% of steps, then cosine decay (same in every format)."""
    lr = warmup_cosine(step, lr=base_lr, warmup=max(1, total // 20), steps=total)
    for group in opt.param_groups:
        group["lr"] = lr


def _bar(cfg: ReproConfig, fmt: str, seed: int, total: int) -> tqdm:
    desc = f"{cfg.experiment} {fmt} seed{seed}"
    return tqdm(range(total), desc=desc, disable=None if cfg.progress else True, leave=False)


def _log_step(
    result: RunResult,
    step: int,
    loss: float,
    telemetry: FlexTelemetry | None,
    model: nn.Module,
    optimizer: Any = None,
    **curves: float,
) -> bool:
    """Record one training step; returns False (and marks the run diverged) on NaN/Inf."""
    result.steps.append(step)
    result.losses.append(loss)
    for name, value in curves.items():
        result.extra_curves.setdefault(name, []).append(value)
    if not all(math.isfinite(v) for v in (loss, *curves.values())):
        result.diverged = True
        return False
    if telemetry is not None:
        telemetry.record(step, model, optimizer)
    return True


# --------------------------------------------------------------------------- classification
def _run_classifier(
    cfg: ReproConfig,
    fmt: str,
    seed: int,
    telemetry: FlexTelemetry | None,
    build: Callable[[], nn.Module],
) -> RunResult:
    x_train, y_train, x_test, y_test = shapes_cifar(cfg.train_size, cfg.test_size)
    torch.manual_seed(seed)
    model = prepare_model(build().to(cfg.device), fmt)
    steps, batch, lr = cfg.value("steps"), cfg.value("batch_size"), cfg.value("lr")
    opt = make_optimizer(fmt, "sgd", model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    result = RunResult(fmt, seed)
    model.train()
    for step in _bar(cfg, fmt, seed, steps):
        _cosine(opt, step, steps, lr)
        idx = torch.randint(0, len(x_train), (batch,), generator=gen)
        x = x_train[idx]
        flip = torch.rand(batch, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x).to(cfg.device)
        try:
            loss = F.cross_entropy(model(x), y_train[idx].to(cfg.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        except FloatingPointError:  # FlexNonFiniteError: a NaN reached a flex op
            result.diverged = True
            break
        if not _log_step(result, step, loss.item(), telemetry, model, opt):
            break
    model.eval()
    wrong = 0
    with torch.no_grad():
        for i in range(0, len(x_test), 500):
            try:
                pred = model(x_test[i : i + 500].to(cfg.device)).argmax(-1).cpu()
            except FloatingPointError:
                pred = torch.full((len(x_test[i : i + 500]),), -1)
            wrong += int((pred != y_test[i : i + 500]).sum())
    result.metrics["test_error"] = wrong / len(x_test)
    result.metrics["final_train_loss"] = _tail_mean(result.losses)
    return result


def _tail_mean(values: list[float], frac: float = 0.05) -> float:
    if not values:
        return float("nan")
    n = max(1, int(len(values) * frac))
    return float(np.mean(values[-n:]))


# --------------------------------------------------------------------------- WGAN
@functools.cache
def digit_feature_net() -> DigitFeatureNet:
    """The fixed float32 classifier for the Fréchet distance (trained once per process, seeded)."""
    x, y = digits_16()
    torch.manual_seed(1234)
    net = DigitFeatureNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(1234)
    for _ in range(400):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@functools.cache
def _real_digit_features() -> np.ndarray:
    """Features of every real digit: the reference side of each run's Fréchet distance."""
    with torch.no_grad():
        return digit_feature_net().features(digits_16()[0]).numpy().astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (N, D)."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        # A collapsed generator gives a singular covariance; the distance is still defined.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean[0] if isinstance(covmean, tuple) else covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _clip_(model: nn.Module, c: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.clamp_(-c, c)


def _run_wgan(cfg: ReproConfig, fmt: str, seed: int, telemetry: FlexTelemetry | None) -> RunResult:
    x_real, _ = digits_16()
    torch.manual_seed(seed)
    width = cfg.value("width")
    z_dim = 32
    gen_model = prepare_model(Generator(z_dim, width).to(cfg.device), fmt)
    critic = prepare_model(Critic(width).to(cfg.device), fmt)
    lr = cfg.value("lr")
    opt_g = make_optimizer(fmt, "rmsprop", gen_model.parameters(), lr=lr, alpha=0.99)
    opt_d = make_optimizer(fmt, "rmsprop", critic.parameters(), lr=lr, alpha=0.99)
    _clip_(critic, 0.01)
    steps, batch = cfg.value("steps"), cfg.value("batch_size")
    rng = torch.Generator().manual_seed(seed)
    result = RunResult(fmt, seed)
    result.extra_curves["wasserstein"] = []
    for step in _bar(cfg, fmt, seed, steps):
        try:
            n_critic = 25 if step < 10 and steps >= 100 else 5  # WGAN paper: critic warm-up
            for _ in range(n_critic):
                idx = torch.randint(0, len(x_real), (batch,), generator=rng)
                z = torch.randn(batch, z_dim, generator=rng).to(cfg.device)
                with torch.no_grad():
                    fake = gen_model(z)
                w_est = critic(x_real[idx].to(cfg.device)).mean() - critic(fake).mean()
                opt_d.zero_grad()
                (-w_est).backward()
                opt_d.step()
                _clip_(critic, 0.01)
            z = torch.randn(batch, z_dim, generator=rng).to(cfg.device)
            g_loss = -critic(gen_model(z)).mean()
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
        except FloatingPointError:
            result.diverged = True
            break
        if not _log_step(
            result, step, g_loss.item(), telemetry, gen_model, wasserstein=w_est.item()
        ):
            break
    result.metrics["wasserstein_estimate"] = _tail_mean(result.extra_curves["wasserstein"])
    result.metrics["final_train_loss"] = _tail_mean(result.losses)
    feature_net = digit_feature_net()
    gen_model.eval()
    with torch.no_grad():
        z = torch.randn(1000, z_dim, generator=torch.Generator().manual_seed(999)).to(cfg.device)
        try:
            fake = gen_model(z).cpu()
            ok = bool(torch.isfinite(fake).all())
        except FloatingPointError:
            ok = False
        if ok:
            f_fake = feature_net.features(fake).numpy().astype(np.float64)
            result.metrics["frechet_distance"] = frechet_distance(_real_digit_features(), f_fake)
            result.metrics["saturated_pixels"] = float((fake.abs() > 0.99).float().mean())
            result.samples = fake[:64].clone()  # type: ignore[attr-defined]
        else:
            result.metrics["frechet_distance"] = float("nan")
    return result


# --------------------------------------------------------------------------- language model
def _encode(text: str, vocab: list[str]) -> torch.Tensor:
    table = {c: i for i, c in enumerate(vocab)}
    return torch.tensor([table[c] for c in text], dtype=torch.long)


def _run_lm(cfg: ReproConfig, fmt: str, seed: int, telemetry: FlexTelemetry | None) -> RunResult:
    train_text, test_text = template_text(4000, seed=11), template_text(400, seed=12)
    vocab = sorted(set(train_text) | set(test_text))
    train, test = _encode(train_text, vocab), _encode(test_text, vocab)
    context = 64
    torch.manual_seed(seed)
    model = prepare_model(
        TinyTransformerLM(
            len(vocab), dim=cfg.value("width"), layers=2, heads=4, context=context
        ).to(cfg.device),
        fmt,
    )
    steps, batch, lr = cfg.value("steps"), cfg.value("batch_size"), cfg.value("lr")
    opt = make_optimizer(
        fmt, "adam", model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0
    )
    rng = torch.Generator().manual_seed(seed)
    result = RunResult(fmt, seed)

    def batch_of(
        data: torch.Tensor, g: torch.Generator, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        start = torch.randint(0, len(data) - context - 1, (n,), generator=g)
        rows = torch.stack([data[s : s + context + 1] for s in start.tolist()])
        return rows[:, :-1].to(cfg.device), rows[:, 1:].to(cfg.device)

    for step in _bar(cfg, fmt, seed, steps):
        _cosine(opt, step, steps, lr)
        x, y = batch_of(train, rng, batch)
        try:
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        except FloatingPointError:
            result.diverged = True
            break
        if not _log_step(result, step, loss.item(), telemetry, model, opt):
            break
    with torch.no_grad():
        x, y = batch_of(test, torch.Generator().manual_seed(5), 64)
        try:
            logits = model(x)
            result.metrics["test_loss"] = F.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
            result.metrics["test_error"] = float((logits.argmax(-1) != y).float().mean())
        except FloatingPointError:
            result.metrics["test_loss"] = result.metrics["test_error"] = float("nan")
    result.metrics["final_train_loss"] = _tail_mean(result.losses)
    return result


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    run: Callable[[ReproConfig, str, int, FlexTelemetry | None], RunResult]
    defaults: dict[str, Any]
    metric: str  # the headline metric (lower is better)


EXPERIMENTS: dict[str, Experiment] = {
    "resnet": Experiment(
        "resnet",
        "CIFAR-style ResNet on 32x32 generated textured shapes (10 classes), SGD momentum 0.9",
        lambda cfg, fmt, seed, tel: _run_classifier(
            cfg, fmt, seed, tel, lambda: ResNetCifar(cfg.depth, cfg.value("width"))
        ),
        {"steps": 600, "batch_size": 64, "lr": 0.1, "width": 16},
        "test_error",
    ),
    "alexnet": Experiment(
        "alexnet",
        "AlexNet-style CNN on 32x32 generated textured shapes (10 classes), SGD momentum 0.9",
        lambda cfg, fmt, seed, tel: _run_classifier(
            cfg, fmt, seed, tel, lambda: AlexNetSmall(width=cfg.value("width"))
        ),
        {"steps": 800, "batch_size": 64, "lr": 0.05, "width": 32},
        "test_error",
    ),
    "wgan": Experiment(
        "wgan",
        "DCGAN-style WGAN with weight clipping on scikit-learn's real digits (16x16), RMSprop",
        _run_wgan,
        {"steps": 1200, "batch_size": 64, "lr": 1e-4, "width": 32},
        "frechet_distance",
    ),
    "lm": Experiment(
        "lm",
        "2-layer character transformer on templated text; attention matmuls in the format, AdamW",
        _run_lm,
        {"steps": 500, "batch_size": 32, "lr": 3e-3, "width": 64},
        "test_loss",
    ),
}


def run_experiment(cfg: ReproConfig, out: str | Path) -> list[RunResult]:
    """Run every (format, seed) of one experiment; write ``out/<experiment>/results.json``."""
    exp = EXPERIMENTS[cfg.experiment]
    folder = Path(out) / exp.name
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [
        *folder.glob("*_telemetry.*"),
        *folder.glob("*_samples.pt"),
        *folder.glob("*.png"),
    ]:
        stale.unlink()  # a rerun with other formats must not leave an earlier run's figures
    runs = [("float32", s) for s in range(cfg.seeds)]
    runs += [(f, s) for f in cfg.formats if f != "float32" for s in range(cfg.other_seeds)]
    results = []
    for fmt, seed in runs:
        tel = None
        if fmt.startswith("flex"):
            path = folder / f"{fmt}_telemetry.jsonl"
            path.unlink(missing_ok=True)
            tel = FlexTelemetry(path, every=cfg.telemetry_every)
        t0 = time.perf_counter()
        try:
            result = exp.run(cfg, fmt, seed, tel)
        finally:
            if tel is not None:
                tel.close()
        result.seconds = time.perf_counter() - t0
        if cfg.progress:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
            flag = " (diverged)" if result.diverged else ""
            print(
                f"{exp.name} {fmt} seed {seed}: {shown} [{result.seconds:.0f} s]{flag}",
                file=sys.stderr,
            )
        samples = getattr(result, "samples", None)
        if samples is not None:
            torch.save(samples, folder / f"{fmt}_seed{seed}_samples.pt")
        results.append(result)
    payload = {
        "experiment": exp.name,
        "description": exp.description,
        "metric": exp.metric,
        "config": {**asdict(cfg), **{k: cfg.value(k) for k in exp.defaults}},
        "runs": [asdict(r) for r in results],
    }
    (folder / "results.json").write_text(json.dumps(payload, indent=1))
    return results


def run_repro(experiments: list[str], out: str | Path, command: str = "", **overrides: Any) -> Path:
    """Run the named experiments and (re)write the report folder; returns ``report.md``."""
    for name in experiments:
        run_experiment(ReproConfig(experiment=name, **overrides), out)
    return write_report(out, command=command)


def smoke_config(experiment: str, **kw: Any) -> ReproConfig:
    """A few steps per format: what ``make test`` runs."""
    base = ReproConfig(experiment=experiment, steps=3, batch_size=8, seeds=2, train_size=64,
                       test_size=32, progress=False, telemetry_every=1)  # fmt: skip
    return replace(base, **kw)
