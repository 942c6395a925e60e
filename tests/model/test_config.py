"""ModelConfig: named sizes, validation that names the field, dict and YAML round trips."""

from __future__ import annotations

import pytest

from omniflex.model.config import MODEL_SIZES, PRECISIONS, ModelConfig
from omniflex.model.vocab import VocabLayout
from tests.model import MICRO_LAYOUT, micro_config

SHIPPED_LAYOUT = VocabLayout(text_size=4096, image_size=1000, audio_size=1000, audio_codebooks=2)


@pytest.mark.parametrize("name", sorted(MODEL_SIZES))
def test_named_sizes_build_valid_configs(name: str) -> None:
    cfg = ModelConfig.from_name(name, vocab=SHIPPED_LAYOUT)
    assert cfg.vocab_size == SHIPPED_LAYOUT.size
    assert cfg.dim % cfg.n_heads == 0 and cfg.head_dim % 2 == 0


def test_tiny_is_cpu_sized() -> None:
    cfg = ModelConfig.from_name("tiny", vocab=SHIPPED_LAYOUT)
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.max_seq_len) == (256, 6, 4, 1024)
    assert cfg.precision == "flex16+5"


def test_from_name_overrides_and_rejects_unknown() -> None:
    cfg = ModelConfig.from_name("tiny", vocab=MICRO_LAYOUT, precision="float32", n_layers=2)
    assert cfg.precision == "float32" and cfg.n_layers == 2
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        ModelConfig.from_name("huge", vocab=MICRO_LAYOUT)
    with pytest.raises(ValueError, match="width"):
        ModelConfig.from_name("tiny", vocab=MICRO_LAYOUT, width=3)


def test_dict_round_trip_and_vocab_as_dict() -> None:
    cfg = micro_config(n_kv_heads=1, dropout=0.1)
    data = cfg.to_dict()
    assert data["vocab"] == MICRO_LAYOUT.to_dict()
    assert ModelConfig.from_dict(data) == cfg


def test_yaml_round_trip_text_and_file(tmp_path) -> None:
    cfg = micro_config(precision="flex16+5", rope_theta=5e5, tie_embeddings=False)
    assert ModelConfig.from_yaml(cfg.to_yaml()) == cfg
    path = tmp_path / "model.yaml"
    cfg.to_yaml(path)
    assert ModelConfig.from_yaml(path) == cfg


def test_yaml_unknown_field_is_named(tmp_path) -> None:
    text = micro_config().to_yaml() + "n_experts: 4\n"
    with pytest.raises(ValueError, match="n_experts"):
        ModelConfig.from_yaml(text)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dim", 0),
        ("n_layers", -1),
        ("n_heads", 3),  # 32 is not a multiple of 3
        ("n_kv_heads", 3),  # does not divide n_heads = 2
        ("mlp_hidden", 0),
        ("max_seq_len", 0),
        ("rope_theta", 0.0),
        ("norm_eps", 0.0),
        ("precision", "float16"),
        ("dropout", 1.0),
        ("tie_embeddings", "yes"),
        ("vocab", 5),
    ],
)
def test_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        micro_config(**{field: value})


def test_odd_head_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="n_heads"):
        micro_config(dim=36, n_heads=4)  # head size 9


def test_precisions_are_all_buildable() -> None:
    for precision in PRECISIONS:
        assert micro_config(precision=precision).precision == precision


def test_config_is_frozen() -> None:
    cfg = micro_config()
    with pytest.raises(AttributeError):
        cfg.dim = 64  # type: ignore[misc]
    assert cfg.replace(dim=64).dim == 64


def test_shipped_layout_matches_the_shipped_tokenizers():
    from omniflex.model.bench import SHIPPED_LAYOUT as BENCH_LAYOUT
    from omniflex.tokenizers import load_tokenizer

    shipped = VocabLayout.from_tokenizers(*(load_tokenizer(k) for k in ("text", "image", "audio")))
    assert shipped == SHIPPED_LAYOUT == BENCH_LAYOUT
