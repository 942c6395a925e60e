"""Model folders: save, load by path or name, dequantised float32 loading, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from omniflex.flex import flex_disabled
from omniflex.model.pretrained import (
    available_models,
    dequantize_state_dict,
    load_pretrained,
    resolve_model_dir,
    save_pretrained,
)
from omniflex.model.transformer import OmniModel
from tests.model import micro_config


@pytest.fixture
def flex_model() -> OmniModel:
    torch.manual_seed(0)
    model = OmniModel.build(micro_config(precision="flex16+5"), seed=0)
    model(torch.randint(0, 200, (1, 12)))  # initialise Autoflex states
    return model.eval()


def test_round_trip_keeps_flex_weights_and_autoflex(flex_model: OmniModel, tmp_path: Path):
    folder = save_pretrained(
        tmp_path / "m", flex_model.state_dict(), flex_model.config, name="m",
        template={"video_fps": 1.0}, training={"steps": 3},
    )  # fmt: skip
    info = json.loads((folder / "config.json").read_text())
    assert info["name"] == "m" and info["training"] == {"steps": 3}
    loaded, meta = load_pretrained(folder)
    assert meta.template == {"video_fps": 1.0}
    ids = torch.randint(0, 200, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, flex_model(ids).logits, rtol=0, atol=0)
    for key, value in flex_model.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(loaded.state_dict()[key], value), key
            if key.endswith("_mantissa"):
                assert value.dtype == torch.int16  # stored as flex16, not float


def test_float32_loading_is_the_exact_weights(flex_model: OmniModel, tmp_path: Path):
    folder = save_pretrained(tmp_path / "m", flex_model.state_dict(), flex_model.config, name="m")
    fast, _ = load_pretrained(folder, precision="float32")
    assert not fast.is_converted
    ids = torch.randint(0, 200, (1, 10))
    with torch.no_grad(), flex_disabled(flex_model):
        reference = flex_model(ids).logits
    torch.testing.assert_close(fast(ids).logits, reference, rtol=1e-5, atol=1e-5)
    state = dequantize_state_dict(flex_model.state_dict())
    assert not any(k.endswith(("_mantissa", "_exponent", "_extra_state")) for k in state)


def test_unknown_model_and_wrong_precision_say_what_to_do(flex_model: OmniModel, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="omniflex model export"):
        resolve_model_dir("no-such-model")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        resolve_model_dir(tmp_path)
    folder = save_pretrained(tmp_path / "m", flex_model.state_dict(), flex_model.config, name="m")
    with pytest.raises(ValueError, match="float32"):
        load_pretrained(folder, precision="bfloat16")
    info = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**info, "format": 99}))
    with pytest.raises(ValueError, match="re-export"):
        load_pretrained(folder)


def test_default_model_is_shipped_and_loads_by_name():
    assert "tiny" in available_models()
    model, info = load_pretrained("tiny")
    assert info["name"] == "tiny"
    assert model.config.precision == "flex16+5"
    size = sum(p.stat().st_size for p in info.path.iterdir())
    assert size < 40e6  # tens of MB at most in git
