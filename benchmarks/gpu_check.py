"""GPU readiness of omniflex.flex, in one run that prints one JSON summary on stdout.

Meant for a CUDA machine (``benchmarks/gpu_check.sh``), in under 10 minutes; ``--tiny`` runs
every section at toy sizes, to check the script itself on a CPU. Sections, each timed and
each recorded even when another fails:

* ``tests``: ``pytest tests/flex`` (the ``device`` fixture adds the cuda cases);
* ``exactness``: on the device, the compiled quantiser against the reference, device-resident
  Autoflex against the host reference, and device-mode training against host-mode training,
  bit for bit (eager kernels, and the default ``auto`` kernels, where inductor compiles);
* ``syncs``: host reads per training step, host and device Autoflex (``count_host_syncs``,
  and on CUDA the driver's own count through ``torch.cuda.set_sync_debug_mode``);
* ``bench_flex``: the Linear and small-MLP steps against float32, with host and device
  Autoflex (``omniflex bench flex --device``);
* ``bench_model``: the tiny model's training step against float32 (``omniflex bench model``,
  which has no device option yet: it runs on the CPU);
* ``compile``: a whole device-resident training step through ``torch._dynamo.explain``
  (graphs, graph breaks, their reasons), and compiled (inductor) against eager, bit for bit.

Progress goes to stderr; the exit status is 0 when the summary was written.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch._dynamo
from torch import nn
from torch._dynamo.utils import counters

from omniflex.flex import (
    AutoflexState,
    DeviceAutoflexState,
    FlexAdam,
    FlexConfig,
    FlexFormat,
    check_flex_step,
    convert_to_flex,
    quantize_reference,
    quantize_tensor,
)
from omniflex.flex.bench import bench_linear_step, bench_small_mlp_step
from omniflex.flex.kernels import quantize_at_device_exponent, requantize_
from omniflex.flex.syncs import count_host_syncs
from omniflex.model.bench import SHIPPED_LAYOUT, bench_train_step

ROOT = Path(__file__).resolve().parent.parent
#: In order of what a short run must not miss: an optional part last.
SECTIONS = ("tests", "exactness", "syncs", "bench_flex", "bench_model", "compile")


def log(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- tests
def run_tests(args: argparse.Namespace, seconds_left: float) -> dict[str, Any]:
    files = ["tests/flex/test_syncs.py", "tests/flex/test_format.py"] if args.tiny else []
    command = [sys.executable, "-m", "pytest", *(files or ["tests/flex"]), "-q"]
    command += ["-p", "no:cacheprovider"]
    timeout = max(30.0, min(seconds_left, 300.0))
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"pytest ran past {timeout:.0f} s", "command": command}
    tail = done.stdout.strip().splitlines()[-1:] or [""]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail[0])}
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    return {
        "ok": done.returncode == 0,
        "returncode": done.returncode,
        "counts": counts,
        "summary": tail[0],
        "failed": failed[:20],
        "cuda_cases": torch.cuda.is_available(),
    }


# --------------------------------------------------------------------------- exactness
def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _kernels_exact(device: torch.device, numel: int) -> dict[str, Any]:
    """Compiled quantisation (Triton on CUDA, C++ on CPU) against the eager reference."""
    fmt = FlexFormat()
    x = torch.randn(numel, generator=torch.Generator().manual_seed(0)).to(device) * 50
    x[::7] = 0.0
    x[::13] *= 1e-7  # flushes
    x[5] = 1e9  # saturates
    mismatches = []
    for exponent in (fmt.min_exponent, -12, fmt.max_exponent):
        ref = quantize_reference(x, exponent, fmt, want_values=True)
        fast = quantize_tensor(x, exponent, fmt, want_values=True, kernel="compiled")
        if not (torch.equal(ref.mantissa, fast.mantissa) and torch.equal(ref.values, fast.values)):
            mismatches.append(f"quantize_tensor at {exponent}")
        if (ref.amax, ref.flushes) != (fast.amax, fast.flushes):
            mismatches.append(f"statistics at {exponent}")
        e = torch.tensor(exponent, device=device)
        dev = quantize_at_device_exponent(x, e, fmt, want_values=True, kernel="compiled")
        if not (torch.equal(dev[0], ref.mantissa) and torch.equal(dev[1], ref.values)):
            mismatches.append(f"quantize_at_device_exponent at {exponent}")
        if int(dev[2]) != ref.flushes:
            mismatches.append(f"device flush count at {exponent}")
        y = x.clone()
        if not torch.equal(requantize_(y, exponent, fmt, kernel="compiled"), ref.values):
            mismatches.append(f"requantize_ at {exponent}")
    return {"ok": not mismatches, "mismatches": mismatches, "numel": numel}


def _autoflex_exact(device: torch.device, steps: int, numel: int) -> dict[str, Any]:
    """Device-resident Autoflex against the host reference on one sequence: steady, growing,
    spikes (overflow), collapses (underflow), zeros and a stale gap."""
    gen = torch.Generator().manual_seed(1)
    result: dict[str, Any] = {}
    for kernel in ("eager", "compiled"):
        ref, dev = AutoflexState("t"), DeviceAutoflexState("t")
        mismatches = []
        for i in range(steps):
            scale = [1.0, 1.1**i, 1e3, 1e-5, 0.0][i % 5] if i % 3 == 0 else 0.25
            x = (torch.randn(numel, generator=gen) * scale).to(device)
            clock = i + (5000 if i > steps // 2 else 0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                a = ref.quantize(x, want_values=True, kernel=kernel, clock=clock)
            b = dev.quantize(x, want_values=True, kernel=kernel, clock=clock)
            same = int(b.exponent) == a.exponent and torch.equal(a.mantissa, b.mantissa)
            same = same and torch.equal(a.values, b.values) and int(b.flushes) == a.flushes
            if not (same and dev.state_dict() == ref.state_dict()):
                mismatches.append(i)
        result[kernel] = {"steps": steps, "mismatched_steps": mismatches[:20]}
    result["ok"] = all(not r["mismatched_steps"] for r in result.values())
    return result


def _training(
    config: FlexConfig, device: torch.device, width: int
) -> tuple[nn.Module, FlexAdam, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """A 3-layer MLP in flex, its FlexAdam, and one training step of it."""
    torch.manual_seed(0)
    layers = [nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()]
    model = convert_to_flex(nn.Sequential(*layers, nn.Linear(width, 8)).to(device), config=config)
    opt = FlexAdam(model.parameters(), lr=1e-3, config=config)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        check_flex_step(model, opt)
        return loss.detach()

    return model, opt, step


def _batches(device: torch.device, steps: int, width: int) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(32, width, generator=gen).to(device),
            torch.randn(32, 8, generator=gen).to(device),
        )
        for _ in range(steps)
    ]


def _mlp_run(config: FlexConfig, device: torch.device, steps: int, width: int) -> tuple:
    model, opt, step = _training(config, device, width)
    for x, y in _batches(device, steps, width):
        step(x, y)
    return model.state_dict(), opt.state_dict()


def _training_exact(device: torch.device, steps: int, width: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kernel in ("eager", "auto"):
        host = _mlp_run(FlexConfig(kernel=kernel), device, steps, width)
        dev = _mlp_run(FlexConfig(kernel=kernel, autoflex_state="device"), device, steps, width)
        out[kernel] = {
            "model_equal": _same(host[0], dev[0]),
            "optimizer_equal": _same(host[1], dev[1]),
        }
    out["ok"] = all(v["model_equal"] and v["optimizer_equal"] for v in out.values())
    out["steps"], out["width"] = steps, width
    return out


def run_exactness(args: argparse.Namespace, seconds_left: float) -> dict[str, Any]:
    device = torch.device(args.device)
    parts = {
        "kernels": _kernels_exact(device, 4096 if args.tiny else 1 << 20),
        "autoflex": _autoflex_exact(device, 12 if args.tiny else 200, 64 if args.tiny else 4096),
        "training": _training_exact(device, 3 if args.tiny else 8, 32 if args.tiny else 256),
    }
    return {"ok": all(p["ok"] for p in parts.values()), **parts}


# --------------------------------------------------------------------------- syncs
def _step_fn(config: FlexConfig, device: torch.device, width: int) -> Callable[[], None]:
    _, _, step = _training(config, device, width)
    ((x, y),) = _batches(device, 1, width)
    return lambda: step(x, y)


def _cuda_syncs(step: Callable[[], None]) -> int:
    """Synchronising CUDA calls in ``step``, as the driver-level debug mode sees them."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in seen)


def run_syncs(args: argparse.Namespace, seconds_left: float) -> dict[str, Any]:
    device = torch.device(args.device)
    out: dict[str, Any] = {}
    for where in ("host", "device"):
        step = _step_fn(FlexConfig(autoflex_state=where), device, 32 if args.tiny else 256)
        step(), step()  # initialise Autoflex, compile what compiles
        with count_host_syncs() as syncs:
            step()
        entry: dict[str, Any] = {"host_reads_per_step": syncs.total, "kinds": dict(syncs.kinds)}
        if device.type == "cuda":
            entry["cuda_syncs_per_step"] = _cuda_syncs(step)
        out[where] = entry
    out["ok"] = out["device"]["host_reads_per_step"] <= 1 and (
        out["device"].get("cuda_syncs_per_step", 0) <= 1
    )
    out["goal"] = "device Autoflex: 0 per op, <= 1 per step"
    return out


# --------------------------------------------------------------------------- compile
def run_compile(args: argparse.Namespace, seconds_left: float) -> dict[str, Any]:
    """The whole device-resident step under dynamo: graphs, breaks and their reasons
    (``torch._dynamo.explain``), and the compiled step (inductor; dynamo only in ``--tiny``)
    against the eager one, bit for bit, weights and Autoflex states included."""
    device = torch.device(args.device)
    width, steps = (32, 3) if args.tiny else (256, 6)
    config = FlexConfig(autoflex_state="device")
    _, _, step = _training(config, device, width)
    ((x, y),) = _batches(device, 1, width)
    step(x, y)
    report = torch._dynamo.explain(step)(x, y)
    reasons = sorted({r.reason.splitlines()[0] for r in report.break_reasons})
    backend = "eager" if args.tiny else "inductor"
    torch._dynamo.reset()
    eager_model, eager_opt, eager_step = _training(config, device, width)
    model, opt, step = _training(config, device, width)
    compiled = torch.compile(step, backend=backend)
    counters.clear()
    losses_equal = all(
        torch.equal(eager_step(bx, by), compiled(bx, by))
        for bx, by in _batches(device, steps, width)
    )
    equal = _same(eager_model.state_dict(), model.state_dict()) and _same(
        eager_opt.state_dict(), opt.state_dict()
    )
    return {
        "ok": losses_equal and equal,
        "graphs": report.graph_count,
        "graph_breaks": report.graph_break_count,
        "break_reasons": reasons,
        "backend": backend,
        "compiled_equals_eager": {"losses": losses_equal, "weights_states_optimizer": equal},
        "steps": steps,
        # more graphs than the first step's are recompiles (a Python int that changes each
        # step — an op's clock, the optimizer's step count — is a guard)
        "graphs_compiled_over_steps": counters["stats"]["unique_graphs"],
    }


# --------------------------------------------------------------------------- benchmarks
def run_bench_flex(args: argparse.Namespace, seconds_left: float) -> dict[str, Any]:
    device = torch.device(args.device)
    linear = {"size": 64, "repeats": 3} if args.tiny else {}
    mlp = {"width": 32, "batch": 8, "repeats": 3} if args.tiny else {}
    out: dict[str, Any] = {}
    for where in ("host", "device"):
        out[where] = {
            "linear_step_vs_fp32": bench_linear_step(device=device, autoflex_state=where, **linear),
            "small_mlp_step_vs_fp32": bench_small_mlp_step(
                device=device, autoflex_state=where, **mlp
            ),
        }
    out["ok"] = True  # figures, not checks: compare each ratio with its goal
    return out


def run_bench_model(args: argparse.Namespace, seconds_left: float) -> dict[str, Any]:
    sizes = {"batch_size": 1, "seq_len": 16, "repeats": 1, "warmup": 1} if args.tiny else {}
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, min(16, torch.get_num_threads())))
    try:
        result = bench_train_step(SHIPPED_LAYOUT, **({"repeats": 3} | sizes))
    finally:
        torch.set_num_threads(previous)
    return {"ok": True, "device": "cpu (bench model has no device option)", **result}


RUNNERS: dict[str, Callable[[argparse.Namespace, float], dict[str, Any]]] = {
    "tests": run_tests,
    "exactness": run_exactness,
    "syncs": run_syncs,
    "compile": run_compile,
    "bench_flex": run_bench_flex,
    "bench_model": run_bench_model,
}


class _OutOfTime(BaseException):
    """SIGTERM (``gpu_check.sh``'s time limit): stop, and still print the summary so far."""


def _stop(signum: int, frame: Any) -> None:
    raise _OutOfTime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes: check the script on a CPU")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu",
        help="device to check (default: cuda when there is one)",
    )  # fmt: skip
    parser.add_argument("--skip", action="append", default=[], choices=SECTIONS)
    parser.add_argument(
        "--budget", type=float, default=540.0,
        help="seconds for the whole run; sections left when it is spent are skipped",
    )  # fmt: skip
    args = parser.parse_args(argv)
    start = time.perf_counter()
    summary: dict[str, Any] = {
        "torch": torch.__version__,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "tiny": args.tiny,
        "sections": {},
    }
    signal.signal(signal.SIGTERM, _stop)
    stopped = False
    for name in SECTIONS:
        spent = time.perf_counter() - start
        if name in args.skip or spent > args.budget or stopped:
            why = "skipped" if name in args.skip else "skipped: out of time"
            summary["sections"][name] = {"ok": None, "seconds": 0.0, "note": why}
            continue
        log(f"{name} ...")
        t0 = time.perf_counter()
        try:
            result = RUNNERS[name](args, args.budget - spent)
        except _OutOfTime:
            result, stopped = {"ok": False, "error": "stopped by the time limit"}, True
        except Exception as err:  # one section's failure must not lose the others
            result = {"ok": False, "error": f"{type(err).__name__}: {err}"}
            log(traceback.format_exc())
        result["seconds"] = round(time.perf_counter() - t0, 2)
        summary["sections"][name] = result
        log(f"{name}: ok={result['ok']} in {result['seconds']} s")
    summary["ok"] = all(s["ok"] is not False for s in summary["sections"].values())
    summary["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
