"""The repro harness in smoke mode: every experiment, every format, a few steps."""

import json
import math

import numpy as np
import pytest
import torch

from omniflex.eval.flex_repro import FORMATS, make_optimizer, prepare_model
from omniflex.eval.flex_repro.models import ResNetCifar, TinyTransformerLM
from omniflex.eval.flex_repro.report import noise_verdict
from omniflex.eval.flex_repro.runner import (
    ReproConfig,
    frechet_distance,
    run_experiment,
    smoke_config,
)
from omniflex.flex import FlexMatmul, FlexSGD, LowPrecisionOptimizer


@pytest.mark.parametrize("experiment", ["resnet", "alexnet", "wgan", "lm"])
def test_smoke_runs_every_format_and_records_results(experiment, tmp_path):
    cfg = smoke_config(experiment, formats=("float32", "flex16+5", "float16", "bfloat16"))
    results = run_experiment(cfg, tmp_path)
    assert [(r.format, r.seed) for r in results] == [
        ("float32", 0), ("float32", 1), ("flex16+5", 0), ("float16", 0), ("bfloat16", 0),
    ]  # fmt: skip
    for r in results:
        assert len(r.losses) == 3 and all(math.isfinite(v) for v in r.losses)
    # Same seed, same data: flex16+5 starts where float32 seed 0 does.
    assert results[2].losses[0] == pytest.approx(results[0].losses[0], rel=1e-3)
    data = json.loads((tmp_path / experiment / "results.json").read_text())
    assert data["metric"] in data["runs"][0]["metrics"]
    assert (tmp_path / experiment / "flex16+5_telemetry.jsonl").stat().st_size > 0


def test_report_is_written_with_table_figures_and_command(tmp_path):
    run_experiment(smoke_config("lm", formats=("float32", "flex16+5")), tmp_path)
    from omniflex.eval.flex_repro.report import write_report

    report = write_report(tmp_path, command="omniflex flex repro lm --smoke")
    text = report.read_text()
    assert "omniflex flex repro lm --smoke" in text
    assert "| flex16+5 | 0 |" in text
    assert (tmp_path / "summary.png").exists() and (tmp_path / "lm" / "curves.png").exists()


def test_formats_apply_to_models_and_optimizers():
    model = prepare_model(TinyTransformerLM(20, dim=16, heads=2, context=8), "flex16+5")
    assert isinstance(model.blocks[0].attn.qk, FlexMatmul)
    assert isinstance(make_optimizer("flex16+5", "sgd", model.parameters(), lr=0.1), FlexSGD)
    m16 = prepare_model(ResNetCifar(8, 4), "float16")
    assert isinstance(
        make_optimizer("float16", "adam", m16.parameters(), lr=1e-3), LowPrecisionOptimizer
    )
    with pytest.raises(ValueError, match="unknown number format"):
        prepare_model(ResNetCifar(8, 4), "fp8")
    assert set(FORMATS) >= {"float32", "flex16+5", "float16", "bfloat16"}


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="unknown experiment"):
        ReproConfig(experiment="vgg")
    with pytest.raises(ValueError, match="float32"):
        ReproConfig(experiment="lm", formats=("flex16+5",))
    with pytest.raises(ValueError, match="depth"):
        ResNetCifar(depth=9)


def test_noise_verdict_and_frechet_distance():
    assert noise_verdict([0.10, 0.12, 0.11], 0.115)["inside"]
    worse = noise_verdict([0.10, 0.12, 0.11], 0.16)
    assert not worse["inside"] and "worse" in worse["text"] and "2.0x" in worse["text"]
    assert noise_verdict([1.0, 2.0], float("nan"))["text"] == "diverged"
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 3.0) == pytest.approx(4 * 9.0, rel=0.05)
    torch.manual_seed(0)
