"""``omniflex bench flex``: Flexpoint speed, memory and accuracy against float32, as ratios.

Every figure compares flex and float32 *in the same run on the same machine*: timings are
interleaved (float, flex, float, flex…) and the median of each is taken, so a noisy shared
machine moves both sides together.
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
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2
) -> dict[str, float]:
    """Median seconds of each function, run in turns."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_quantize_vs_copy(numel: int = 16 * 1024 * 1024, repeats: int = 15) -> dict[str, Any]:
    """clone() of a float32 tensor vs quantising it to flex16 (mantissas + amax + flushes)."""
    torch.manual_seed(0)
    x = torch.randn(numel)
    fmt = FlexFormat()
    t = interleaved_medians(
        {
            "clone": lambda: x.clone(),
            "quantize_compiled": lambda: quantize_tensor(x, -12, fmt, kernel="compiled"),
            "quantize_eager": lambda: quantize_tensor(x, -12, fmt, kernel="eager"),
        },
        repeats,
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
    ref = build()
    flex = convert_to_flex(copy.deepcopy(ref), config=config)
    with torch.no_grad():
        grad_y = torch.randn_like(ref(x))  # a dense incoming gradient, as in training

    def step(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            x.grad = None
            model(x).backward(grad_y)

        return run

    t = interleaved_medians({"fp32": step(ref), "flex": step(flex)}, repeats, warmup=3)
    return {
        "fp32_ms": t["fp32"] * 1e3,
        "flex_ms": t["flex"] * 1e3,
        "ratio": t["flex"] / t["fp32"],
        "kernel": config.kernel,
    }


def bench_linear_step(repeats: int = 15, kernel: str = "auto") -> dict[str, Any]:
    """Forward + backward of a 1024x1024 Linear on a 1024x1024 batch: flex16+5 / fp32."""
    torch.manual_seed(0)
    x = torch.randn(1024, 1024, requires_grad=True)
    out = _step_ratio(lambda: nn.Linear(1024, 1024), x, repeats, FlexConfig(kernel=kernel))
    return {**out, "goal": "<= 1.2"}


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256)
    )  # fmt: skip


def bench_small_mlp_step(repeats: int = 50, kernel: str = "auto") -> dict[str, Any]:
    """The same for a 3-layer 256-wide MLP at batch 64, where per-op overhead dominates."""
    torch.manual_seed(0)
    x = torch.randn(64, 256, requires_grad=True)
    return {**_step_ratio(_mlp, x, repeats, FlexConfig(kernel=kernel)), "goal": "<= 2.0"}


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


def run_flex_benchmarks(names: list[str] | None = None) -> dict[str, Any]:
    """Run the named benchmarks (default all) and return their results with machine facts."""
    chosen = names or list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        raise ValueError(f"unknown benchmarks {sorted(unknown)}; choose from {list(BENCHMARKS)}")
    results: dict[str, Any] = {
        "machine": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }
    }
    for name in chosen:
        results[name] = BENCHMARKS[name]()
    return results
