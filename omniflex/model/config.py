"""``ModelConfig``: the shape and number format of an omni transformer, with named sizes.

One frozen dataclass holds everything needed to build the network; ``from_name`` picks a named
size (``tiny`` trains on a 2-core CPU, ``small`` and ``base`` on GPUs) and the rest derives from
it. The vocabulary is the ``VocabLayout`` of the tokenizers the model reads and writes, so a
config (and the checkpoint that carries it) says which ids mean what. YAML round-trips exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from omniflex.common.configs import check_fields, dump_yaml, load_yaml
from omniflex.model.vocab import VocabLayout

__all__ = ["MODEL_SIZES", "PRECISIONS", "ModelConfig"]

#: Number formats a model can train and run in. ``flex16+5`` is the paper's (weights stored only
#: as int16 mantissas + exponent); ``flex16+5-master`` keeps float32 master weights;
#: ``bfloat16`` rounds at the same places flex quantises (an emulation, for comparisons).
PRECISIONS: tuple[str, ...] = ("flex16+5", "flex16+5-master", "float32", "bfloat16")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of an ``OmniModel``.

    Args:
        vocab: the vocabulary layout (a ``VocabLayout`` or its ``to_dict()``).
        dim: model width.
        n_layers: transformer blocks.
        n_heads: query heads; ``dim`` must be a multiple of it, giving an even head size.
        n_kv_heads: key/value heads (grouped-query attention); ``None`` means ``n_heads``.
        mlp_hidden: SwiGLU hidden width.
        max_seq_len: longest sequence (RoPE table and KV cache capacity).
        rope_theta: RoPE base frequency.
        norm_eps: RMSNorm epsilon.
        precision: one of ``PRECISIONS``.
        dropout: dropout on attention probabilities and residual branches while training.
        tie_embeddings: share the token embedding with the output head.
        input_encoders: read user speech as log-mel frames and pictures as pixel patches
            through ``omniflex.model.encoders`` (placeholders ``<|mel|>``/``<|patch|>`` in
            the ids, features beside them); off, they enter as codec and VQ code ids.
        speech_layers: causal convolution layers of the speech encoder over its 40 ms rows
            (dilations 1, 2, 4, ...; ``encoders.SpeechEncoder``); 0 is one ``Linear`` per row.
        speech_width: width of those layers.
        speech_kernel: rows each of those layers reads (kernel size).
        speech_ffn: 0, or each of those layers is a pre-norm block (RMSNorm, convolution,
            RMSNorm, a two-layer feed-forward of ``speech_ffn * speech_width`` units).
    """

    vocab: VocabLayout
    dim: int = 256
    n_layers: int = 6
    n_heads: int = 4
    n_kv_heads: int | None = None
    mlp_hidden: int = 704
    max_seq_len: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    precision: str = "flex16+5"
    dropout: float = 0.0
    tie_embeddings: bool = True
    input_encoders: bool = False
    speech_layers: int = 0
    speech_width: int = 256
    speech_kernel: int = 3
    speech_ffn: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.vocab, dict):
            object.__setattr__(self, "vocab", VocabLayout.from_dict(self.vocab))
        if not isinstance(self.vocab, VocabLayout):
            raise ValueError(
                f"ModelConfig.vocab must be a VocabLayout or its dict, got "
                f"{type(self.vocab).__name__}; build one with VocabLayout.from_tokenizers(...)"
            )
        for name in ("dim", "n_layers", "n_heads", "mlp_hidden", "max_seq_len", "speech_width",
                     "speech_kernel", "speech_layers", "speech_ffn"):  # fmt: skip
            value = getattr(self, name)
            least = 0 if name in ("speech_layers", "speech_ffn") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"ModelConfig.{name} must be an integer >= {least}, got {value!r}")
        if self.dim % self.n_heads:
            raise ValueError(
                f"ModelConfig.dim ({self.dim}) must be a multiple of n_heads ({self.n_heads})"
            )
        if (self.dim // self.n_heads) % 2:
            raise ValueError(
                f"ModelConfig.n_heads: head size dim/n_heads = {self.dim // self.n_heads} must be "
                "even for RoPE; choose n_heads so that dim / n_heads is even"
            )
        kv = self.n_kv_heads
        if kv is not None and (not isinstance(kv, int) or kv < 1 or self.n_heads % kv):
            raise ValueError(
                f"ModelConfig.n_kv_heads must divide n_heads ({self.n_heads}), got {kv!r}; "
                "use None for ordinary multi-head attention"
            )
        if not self.rope_theta > 0:
            raise ValueError(f"ModelConfig.rope_theta must be > 0, got {self.rope_theta}")
        if not self.norm_eps > 0:
            raise ValueError(f"ModelConfig.norm_eps must be > 0, got {self.norm_eps}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"ModelConfig.precision must be one of {list(PRECISIONS)}, got {self.precision!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.input_encoders, bool):
            raise ValueError(
                f"ModelConfig.input_encoders must be true or false, got {self.input_encoders!r}"
            )
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(
                f"ModelConfig.tie_embeddings must be true or false, got {self.tie_embeddings!r}"
            )

    # ------------------------------------------------------------------ derived
    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads actually used (``n_kv_heads`` or ``n_heads``)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_name(
        cls, name: str, *, vocab: VocabLayout | dict[str, int], **overrides: Any
    ) -> ModelConfig:
        """A named size (see ``MODEL_SIZES``) over ``vocab``, optionally with fields replaced."""
        if name not in MODEL_SIZES:
            raise ValueError(f"unknown model size {name!r}; choose one of {sorted(MODEL_SIZES)}")
        check_fields(cls, overrides, source=f"overrides of model size {name!r}")
        return cls(vocab=vocab, **{**MODEL_SIZES[name], **overrides})

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with fields replaced (validated again)."""
        return replace(self, **changes)

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["vocab"] = self.vocab.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a mapping (``to_dict``'s); unknown keys raise and list the valid ones."""
        check_fields(cls, data, source="model config")
        if "vocab" not in data:
            raise ValueError("model config has no 'vocab' (the VocabLayout of its tokenizers)")
        return cls(**data)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML text; also written to ``path`` when given."""
        return dump_yaml(self.to_dict(), path)

    @classmethod
    def from_yaml(cls, source: str | Path) -> ModelConfig:
        """Load from a ``.yaml``/``.yml`` file path or from YAML text."""
        return cls.from_dict(load_yaml(source))


#: Named sizes. ``tiny`` (~5M block parameters plus the embedding) trains on a 2-core CPU.
MODEL_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"dim": 256, "n_layers": 6, "n_heads": 4, "mlp_hidden": 704, "max_seq_len": 1024},
    "small": {"dim": 512, "n_layers": 8, "n_heads": 8, "mlp_hidden": 1408, "max_seq_len": 2048},
    "base": {
        "dim": 768,
        "n_layers": 12,
        "n_heads": 12,
        "n_kv_heads": 4,
        "mlp_hidden": 2048,
        "max_seq_len": 4096,
    },
}
