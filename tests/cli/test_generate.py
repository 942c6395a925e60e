"""``omniflex generate`` end to end: a two-step model on the shipped vocabulary answers."""

import json

import numpy as np
import yaml

from omniflex.cli.main import main
from omniflex.model import VocabLayout
from omniflex.tokenizers import load_tokenizer
from omniflex.train import write_token_cache


def _train_micro_model(tmp_path):
    layout = VocabLayout.from_tokenizers(*(load_tokenizer(k) for k in ("text", "image", "audio")))
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        docs = [(rng.integers(0, layout.text_size, 30).tolist(), [1] * 30) for _ in range(8)]
        write_token_cache(tmp_path / "tokens" / split, docs)
        sidecar = {"template": {"layout": layout.to_dict()}}
        (tmp_path / "tokens" / f"{split}.json").write_text(json.dumps(sidecar))
    recipe = {
        "extends": "tiny",
        "model_overrides": {"dim": 32, "n_layers": 1, "n_heads": 2, "mlp_hidden": 64},
        "train_data": str(tmp_path / "tokens" / "train"),
        "val_data": str(tmp_path / "tokens" / "val"),
        "packing": "stream", "task_weights": {},  # random ids: no documents, no tasks
        "seq_len": 16, "batch_size": 2, "steps": 2, "warmup": 1, "val_every": 2,
        "val_batches": 1, "ckpt_every": 2, "threads": 1, "progress": False,
        "out_dir": str(tmp_path / "run"),
    }  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "--recipe", str(tmp_path / "recipe.yaml")]) == 0
    return tmp_path / "run"


def test_generate_answers_from_a_trained_run(tmp_path, capsys):
    run = _train_micro_model(tmp_path)
    capsys.readouterr()
    argv = ["generate", "what is two plus three?", "--model", str(run), "--out",
            str(tmp_path / "answer"), "--max-new-tokens", "5"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] <= 5 and result["stop_reason"] in ("max_new_tokens", "stop_token")
    assert isinstance(result["text"], str)
    assert json.loads((tmp_path / "answer" / "answer.json").read_text())["text"] == result["text"]


def test_generate_errors(tmp_path, capsys):
    assert main(["generate", "hi", "--model", str(tmp_path / "nothing")]) == 2
    assert "omniflex model export" in capsys.readouterr().err
