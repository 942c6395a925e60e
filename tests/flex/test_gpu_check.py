"""``benchmarks/gpu_check.sh`` runs end to end on a CPU at toy sizes and prints one JSON
summary with every section (the real run is on a CUDA machine)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {"tests", "exactness", "syncs", "compile", "bench_flex", "bench_model"}


def test_gpu_check_tiny_run_prints_one_json_summary():
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--tiny", "--device", "cpu"],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # stdout is the JSON and nothing else
    assert summary["tiny"] is True and summary["device"] == "cpu"
    assert set(summary["sections"]) == SECTIONS
    for name, section in summary["sections"].items():
        assert section["ok"] is True, (name, section)
        assert section["seconds"] >= 0
    assert summary["ok"] is True
    exact = summary["sections"]["exactness"]
    assert exact["kernels"]["mismatches"] == []
    assert exact["training"]["eager"] == {"model_equal": True, "optimizer_equal": True}
    syncs = summary["sections"]["syncs"]
    assert syncs["device"]["host_reads_per_step"] <= 1 < syncs["host"]["host_reads_per_step"]
    for where in ("host", "device"):
        bench = summary["sections"]["bench_flex"][where]
        assert {"linear_step_vs_fp32", "small_mlp_step_vs_fp32"} <= set(bench)
        assert all(b["ratio"] > 0 and b["autoflex_state"] == where for b in bench.values())
    assert "ratio_flex16_vs_float32" in summary["sections"]["bench_model"]
    compiled = summary["sections"]["compile"]
    assert compiled["graph_breaks"] >= 3 and compiled["break_reasons"]  # reported, not hidden
