"""``omniflex bench flex``: Flexpoint speed, memory and accuracy against float32, as ratios.

Every figure compares flex and float32 *in the same run on the same machine*: timings are
interleaved (float, flex, float, flex…) and the median of each is taken, so a noisy shared
machine moves both sides together. ``device`` runs the timed benchmarks there (a GPU's queue
is drained before each clock reading); ``autoflex_state`` picks where the flex steps keep their
Autoflex statistics (``FlexConfig.autoflex_state``).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from omniflex.flex.config import FlexConfig
from omniflex.flex.convert import convert_to_flex
from omniflex.flex.format import FlexFormat
from omniflex.flex.kernels import quantize_tensor
from omniflex.flex.numerics import layer_sqnr
from omniflex.flex.weight import FlexWeight

__all__ = ["BENCHMARKS", "interleaved_medians", "run_flex_benchmarks"]


def interleaved_medians(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 2,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Median seconds of each function, run in turns. On an accelerator ``device`` the
    queued work is waited for before each clock reading, so a time is the work's, not the
    launch's."""
    dev = torch.device(device) if device is not None else None
    wait = torch.accelerator.synchronize if dev is not None and dev.type != "cpu" else None

    def timed(fn: Callable[[], Any]) -> float:
        if wait is not None:
            wait(dev)
        t0 = time.perf_counter()
        fn()
        if wait is not None:
            wait(dev)
        return time.perf_counter() - t0

    for fn in fns.values():
        for _ in range(warmup):
            timed(fn)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def bench_quantize_vs_copy(
    numel: int = 16 * 1024 * 1024, repeats: int = 15, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """clone() of a float32 tensor vs quantising it to flex16 (mantissas + amax + flushes)."""
    torch.manual_seed(0)
    x = torch.randn(numel).to(device)
    fmt = FlexFormat()
    t = interleaved_medians(
        {
            "clone": lambda: x.clone(),
            "quantize_compiled": lambda: quantize_tensor(x, -12, fmt, kernel="compiled"),
            "quantize_eager": lambda: quantize_tensor(x, -12, fmt, kernel="eager"),
        },
        repeats,
        device=device,
    )
    return {
        "numel": numel,
        "clone_ms": t["clone"] * 1e3,
        "quantize_compiled_ms": t["quantize_compiled"] * 1e3,
        "quantize_eager_ms": t["quantize_eager"] * 1e3,
        "ratio": t["clone"] / t["quantize_compiled"],
        "ratio_eager": t["clone"] / t["quantize_eager"],
        "goal": ">= 0.9",
    }


def _step_ratio(
    build: Callable[[], nn.Module], x: torch.Tensor, repeats: int, config: FlexConfig
) -> dict[str, Any]:
    ref = build().to(x.device)
    flex = convert_to_flex(copy.deepcopy(ref), config=config)
    with torch.no_grad():
        grad_y = torch.randn_like(ref(x))  # a dense incoming gradient, as in training

    def step(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            x.grad = None
            model(x).backward(grad_y)

        return run

    t = interleaved_medians(
        {"fp32": step(ref), "flex": step(flex)}, repeats, warmup=3, device=x.device
    )
    return {
        "fp32_ms": t["fp32"] * 1e3,
        "flex_ms": t["flex"] * 1e3,
        "ratio": t["flex"] / t["fp32"],
        "kernel": config.kernel,
        "autoflex_state": config.autoflex_state,
        "device": str(x.device),
    }


def bench_linear_step(
    repeats: int = 15,
    kernel: str = "auto",
    *,
    size: int = 1024,
    device: torch.device | str = "cpu",
    autoflex_state: str = "host",
) -> dict[str, Any]:
    """Forward + backward of a 1024x1024 Linear on a 1024x1024 batch: flex16+5 / fp32."""
    torch.manual_seed(0)
    x = torch.randn(size, size).to(device).requires_grad_()
    config = FlexConfig(kernel=kernel, autoflex_state=autoflex_state)
    out = _step_ratio(lambda: nn.Linear(size, size), x, repeats, config)
    return {**out, "size": size, "goal": "<= 1.15"}


def _mlp(width: int = 256) -> nn.Module:
    return nn.Sequential(
        nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, width),
    )  # fmt: skip


def bench_small_mlp_step(
    repeats: int = 50,
    kernel: str = "auto",
    *,
    width: int = 256,
    batch: int = 64,
    device: torch.device | str = "cpu",
    autoflex_state: str = "host",
) -> dict[str, Any]:
    """The same for a 3-layer 256-wide MLP at batch 64, where per-op overhead dominates."""
    torch.manual_seed(0)
    x = torch.randn(batch, width).to(device).requires_grad_()
    config = FlexConfig(kernel=kernel, autoflex_state=autoflex_state)
    out = _step_ratio(lambda: _mlp(width), x, repeats, config)
    return {**out, "width": width, "batch": batch, "goal": "<= 2.0"}


def bench_param_bytes() -> dict[str, Any]:
    """Stored parameter bytes in paper mode (int16 mantissas + exponents) / float32 bytes."""
    out = {}
    for name, build in (("linear_1024", lambda: nn.Linear(1024, 1024)), ("mlp_256", _mlp)):
        model = build()
        fp32 = sum(p.numel() * p.element_size() for p in model.parameters())
        model = convert_to_flex(model, config=FlexConfig(weight_mode="paper"))
        stored = sum(
            p.nbytes_stored if isinstance(p, FlexWeight) else p.numel() * p.element_size()
            for p in model.parameters()
        )
        out[name] = {"fp32_bytes": fp32, "flex_bytes": stored, "ratio": stored / fp32}
    return {**out, "ratio": max(v["ratio"] for v in out.values()), "goal": "<= 0.52"}


def bench_sqnr() -> dict[str, Any]:
    """SQNR (dB) vs float32 after 5 SGD steps: outputs, input and weight gradients."""
    return {kind: layer_sqnr(kind) for kind in ("linear", "conv2d", "embedding")}


BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "quantize_vs_copy": bench_quantize_vs_copy,
    "linear_step_vs_fp32": bench_linear_step,
    "small_mlp_step_vs_fp32": bench_small_mlp_step,
    "param_bytes_vs_fp32": bench_param_bytes,
    "sqnr_db": bench_sqnr,
}


#: The benchmarks that time steps on a device, and so take ``device`` and ``autoflex_state``.
DEVICE_BENCHMARKS = ("quantize_vs_copy", "linear_step_vs_fp32", "small_mlp_step_vs_fp32")


def run_flex_benchmarks(
    names: list[str] | None = None,
    *,
    device: torch.device | str = "cpu",
    autoflex_state: str = "host",
) -> dict[str, Any]:
    """Run the named benchmarks (default all) and return their results with machine facts.
    The timed ones run on ``device``; the step benchmarks keep Autoflex's statistics where
    ``autoflex_state`` says."""
    chosen = names or list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        raise ValueError(f"unknown benchmarks {sorted(unknown)}; choose from {list(BENCHMARKS)}")
    device = torch.device(device)
    results: dict[str, Any] = {
        "machine": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        }
    }
    for name in chosen:
        if name == "quantize_vs_copy":
            results[name] = bench_quantize_vs_copy(device=device)
        elif name in DEVICE_BENCHMARKS:
            results[name] = BENCHMARKS[name](device=device, autoflex_state=autoflex_state)
        else:
            results[name] = BENCHMARKS[name]()
    return results
