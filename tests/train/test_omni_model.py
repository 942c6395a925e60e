"""The trainer on the real ``OmniModel`` (a few-parameter configuration): ``train_main`` from a
recipe file, the vocabulary read beside the token cache, bit-exact resume in flex16+5."""

import json

import numpy as np
import pytest
import yaml

from omniflex.cli.main import main as omniflex_main
from omniflex.train import load_recipe, run_training, train_main, write_token_cache

model_pkg = pytest.importorskip("omniflex.model")
special = pytest.importorskip("omniflex.tokenizers.special")

SHAPE = {"dim": 32, "n_layers": 1, "n_heads": 2, "mlp_hidden": 64, "max_seq_len": 32}


@pytest.fixture
def recipe(tmp_path):
    layout = model_pkg.VocabLayout(
        text_size=special.NUM_SPECIAL + 40, image_size=16, audio_size=8, audio_codebooks=2
    )
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("val", 20)):
        docs = []
        for _ in range(n):
            length = int(rng.integers(6, 18))  # whole documents fit a block (seq_len 16)
            ids = rng.integers(0, layout.size, length).tolist()
            docs.append((ids, [0] * (length // 3) + [1] * (length - length // 3)))
        write_token_cache(tmp_path / "tokens" / split, docs)
        sidecar = {  # as pretokenize_corpus writes it
            "template": {"layout": layout.to_dict()},
            "tasks": ["asr", "tts"],
            "doc_tasks": [d % 2 for d in range(n)],
        }
        (tmp_path / "tokens" / f"{split}.json").write_text(json.dumps(sidecar))
    config = {
        "extends": "tiny",
        "model_overrides": SHAPE,
        "task_weights": {},  # the tiny recipe's weights name tasks this cache does not hold
        "train_data": str(tmp_path / "tokens" / "train"),
        "val_data": str(tmp_path / "tokens" / "val"),
        "seq_len": 16, "batch_size": 4, "steps": 4, "warmup": 1, "lr": 1e-3, "min_lr": 1e-4,
        "val_every": 2, "val_batches": 1, "ckpt_every": 2, "log_every": 1, "threads": 1,
        "progress": False, "out_dir": str(tmp_path / "full"),
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("packing", ["stream", "documents"])
def test_train_main_and_bit_exact_resume_on_omni_model(recipe, tmp_path, packing):
    out_dir = train_main(str(recipe), ["precision=flex16+5", f"packing={packing}"])
    assert out_dir == tmp_path / "full"
    full = {r["step"]: r["loss"] for r in map(json.loads, (out_dir / "metrics.jsonl").open())
            if "loss" in r}  # fmt: skip
    config = load_recipe(recipe, [f"out_dir={tmp_path / 'cut'}", f"packing={packing}"])
    run_training(config, max_steps=3)  # killed after the step-2 checkpoint
    resumed = run_training(config, resume=True)
    assert resumed.losses == {3: full[3], 4: full[4]}


def test_train_command(recipe, tmp_path, capsys):
    assert omniflex_main(["train", "--recipe", str(recipe), "precision=float32", "steps=2"]) == 0
    assert "run folder" in capsys.readouterr().out


def test_flex16_tracks_float32_on_masked_data(recipe, tmp_path):
    losses = {}
    for precision in ("float32", "flex16+5"):
        config = load_recipe(
            recipe, [f"precision={precision}", f"out_dir={tmp_path / precision}", "lr=3e-3"]
        )
        losses[precision] = run_training(config).losses
    for step, loss in losses["float32"].items():
        assert losses["flex16+5"][step] == pytest.approx(loss, rel=0.01)


def test_task_weights_and_the_loss_balance_in_the_log(recipe, tmp_path):
    out_dir = train_main(
        str(recipe), ["precision=float32", "packing=documents", "task_weights={asr: 4, tts: 1}",
                      f"out_dir={tmp_path / 'weighted'}"],
    )  # fmt: skip
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").open()]
    logged = [r for r in records if "task_loss/asr" in r]
    assert logged, records[:3]
    for r in logged:
        assert r["loss_share/task/asr"] + r["loss_share/task/tts"] == pytest.approx(1.0)
        assert r["token_share/task/asr"] > r["token_share/task/tts"]  # weighted 4 to 1
        shares = [r[f"loss_share/modality/{k}"] for k in ("special", "text", "image", "audio")]
        assert sum(shares) == pytest.approx(1.0)


def test_a_stage_starts_from_another_runs_weights(recipe, tmp_path):
    torch = pytest.importorskip("torch")
    from omniflex.train.checkpoint import load_model_state
    from omniflex.train.run import build_omni_model, init_weights

    first = run_training(load_recipe(recipe, ["precision=flex16+5", "steps=2"]))
    stage = load_recipe(recipe, [f"init_from={first.out_dir}", f"out_dir={tmp_path / 'stage'}",
                                 "precision=flex16+5", "steps=1", "task_rates={asr: 2}",
                                 "packing=documents"])  # fmt: skip
    model = build_omni_model(stage)
    init_weights(model, stage.init_from)
    saved, _ = load_model_state(first.out_dir)
    mine = model.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in saved.items() if isinstance(v, torch.Tensor))
    fresh = build_omni_model(stage)
    assert not all(torch.equal(fresh.state_dict()[k], v) for k, v in mine.items()
                   if isinstance(v, torch.Tensor))  # fmt: skip
    result = run_training(stage)  # its own step 1, from the first run's weights
    assert result.step == 1 and set(result.losses) == {1}
    with pytest.raises(ValueError, match="different model"):
        init_weights(build_omni_model(stage.replace(precision="float32")), first.out_dir)
    with pytest.raises(FileNotFoundError, match="init_from"):
        init_weights(model, tmp_path / "nowhere")
