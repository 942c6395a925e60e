"""``OmniModel``: one decoder-only transformer over text, image and audio tokens.

The vocabulary is one id space laid out as ranges (``VocabLayout``); the network does not know
which range a token comes from — modality lives in the ids and in the marker tokens around
each span. Pre-norm blocks of QK-norm attention and a SwiGLU MLP, RoPE positions, RMSNorm, and
an output head tied to the token embedding by default.

``OmniModel(config)`` is the float32 network; ``OmniModel.build(config)`` applies the config's
precision: ``convert_to_flex`` for ``flex16+5`` (the paper's weight mode: weights stored only as
int16 mantissas + exponent), float32 master weights for ``flex16+5-master``, and bfloat16
rounding at the same places for ``bfloat16`` (an emulation, for side-by-side comparisons).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omniflex.flex import FlexConfig, FlexWeight, convert_to_flex, convert_to_float_emulation
from omniflex.model.config import ModelConfig
from omniflex.model.encoders import InputEncoders, InputFeatures
from omniflex.model.kv_cache import CacheStorage, KVCache
from omniflex.model.layers import MLP, AttentionImpl, RMSNorm, RotaryEmbedding, SelfAttention

__all__ = ["Block", "ModelOutput", "OmniModel"]


@dataclass
class ModelOutput:
    """What ``OmniModel.forward`` returns."""

    logits: torch.Tensor  # (B, T, V) float32, or (B, 1, V) with last_only=True
    loss: torch.Tensor | None = None  # () mean cross-entropy over the selected positions


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = SelfAttention(
            config.dim, config.n_heads, config.kv_heads,
            norm_eps=config.norm_eps, dropout=config.dropout, layer_index=layer_index,
        )  # fmt: skip
        self.mlp_norm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = MLP(config.dim, config.mlp_hidden, config.dropout)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, C)
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        segments: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, segments)
        return x + self.mlp(self.mlp_norm(x))  # (B, T, C)


class OmniModel(nn.Module):
    """The omni transformer. Build with ``OmniModel.build(config)`` to apply its precision."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        V, C = config.vocab_size, config.dim
        self.tok_emb = nn.Embedding(V, C)
        # Speech and pictures the model reads (None: they enter as code ids).
        self.encoders = (
            InputEncoders(
                C, speech_layers=config.speech_layers, speech_width=config.speech_width,
                speech_kernel=config.speech_kernel, speech_ffn=config.speech_ffn,
            )
            if config.input_encoders
            else None
        )  # fmt: skip
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(C, config.norm_eps)
        self.lm_head = nn.Linear(C, V, bias=False)
        self.rope = RotaryEmbedding(config.head_dim, config.max_seq_len, config.rope_theta)
        self._init_weights()
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    def _init_weights(self) -> None:
        # GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * layers) so
        # the residual stream's variance does not grow with depth.
        std = 0.02
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                continue
            scale = (
                (2 * self.config.n_layers) ** -0.5
                if name.endswith(("wo.weight", "w2.weight"))
                else 1.0
            )
            nn.init.normal_(p, mean=0.0, std=std * scale)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, config: ModelConfig, *, seed: int | None = None) -> OmniModel:
        """A new model in ``config.precision`` (weights drawn from ``seed`` when given)."""
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = cls(config)
        else:
            model = cls(config)
        return model.apply_precision()

    def apply_precision(self) -> OmniModel:
        """Convert this float32 model to ``config.precision`` in place and return it."""
        precision = self.config.precision
        if precision == "float32":
            return self
        if self.is_converted:
            raise ValueError("this model is already converted; build a fresh OmniModel(config)")
        if precision in ("flex16+5", "flex16+5-master"):
            convert_to_flex(self, config=FlexConfig.from_recipe_name(precision))
            if self.config.tie_embeddings:
                # Conversion quantises each module's weight separately; tie them again so that
                # the head and the embedding share one FlexWeight (and one gradient).
                self.lm_head.weight = self.tok_emb.weight
        elif precision == "bfloat16":
            convert_to_float_emulation(self, "bfloat16")  # wraps modules: ties survive
        else:  # config validation keeps this unreachable
            raise ValueError(f"unknown precision {precision!r}")
        return self

    @property
    def is_converted(self) -> bool:
        """Whether the matmul layers have been swapped (flex or emulation)."""
        return type(self.lm_head) is not nn.Linear

    def set_attention_impl(self, impl: AttentionImpl) -> None:
        """Attention kernel: ``"auto"`` (SDPA for unconverted float32 models; for flex training,
        ``SelfAttention.blocked_attention``; else the written-out reference), ``"reference"``
        or ``"sdpa"``."""
        if impl not in ("auto", "reference", "sdpa"):
            raise ValueError(f"attention impl must be auto, reference or sdpa, got {impl!r}")
        for block in self.blocks:
            block.attn.impl = impl

    def new_cache(
        self, batch_size: int = 1, *, storage: CacheStorage = "float32", max_len: int | None = None
    ) -> KVCache:
        """An empty ``KVCache`` for this model."""
        return KVCache.for_model(self, batch_size=batch_size, storage=storage, max_len=max_len)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
        features: InputFeatures | None = None,
        last_only: bool = False,
    ) -> ModelOutput:
        """Logits for every position of ``input_ids`` and, with ``targets``, the loss.

        Args:
            input_ids: (B, T) token ids.
            targets: (B, T) next-token ids; ``-100`` marks positions without a target.
            loss_mask: (B, T), 1 where the loss counts (e.g. assistant turns), 0 elsewhere;
                the loss is the mean cross-entropy over positions with mask 1 and a target.
                A float mask weighs each target: the loss is then the weighted mean.
            cache: a ``KVCache``; the T tokens are appended after its ``length`` cached
                positions and attend to all of them.
            positions: (T,) or (B, T) RoPE positions; default ``cache.length + arange(T)``
                (or ``arange(T)`` without a cache). Masking always follows storage order.
            segments: (B, T) document ids when a row packs several documents: a position
                attends only to its own document (pass ``positions`` restarting at 0 in each).
            features: the speech and picture rows of the ``<|mel|>`` / ``<|patch|>``
                placeholders in ``input_ids`` (models with ``input_encoders`` only).
            last_only: compute logits of the last position only (decoding: skips the head's
                (T-1) x V work).
        """
        if input_ids.dim() != 2:
            raise ValueError(
                f"input_ids must be (batch, time), got shape {tuple(input_ids.shape)}; "
                "add a batch dimension with ids.unsqueeze(0)"
            )
        T = input_ids.shape[1]
        V = self.config.vocab_size
        if T == 0:
            raise ValueError("input_ids has no positions (T = 0)")
        past = cache.length if cache is not None else 0
        if positions is None:
            cos, sin = self.rope(start=past, length=T)  # (T, 1, D)
        else:
            cos, sin = self.rope(positions)  # (T, 1, D) or (B, T, 1, D)
        x = self.tok_emb(input_ids)  # (B, T, C)
        if self.encoders is not None:
            x = self.encoders(x, input_ids, features)
        elif features is not None and len(features):
            raise ValueError(
                "this model reads speech and pictures as code ids (input_encoders is off); "
                "encode its conversations with ChatTemplate(input_features=False)"
            )
        if self.config.dropout and self.training:
            x = self.dropout(x)
        for block in self.blocks:
            x = block(x, cos, sin, None, cache, segments)  # causal; attends to the cache
        if cache is not None:
            cache.advance(T)
        x = self.norm(x)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        logits = self.lm_head(x).float()  # (B, T, V)
        loss = None
        if targets is not None:
            if last_only:
                raise ValueError("targets need logits of every position; drop last_only")
            loss = self.loss(logits, targets, loss_mask)
        if logits.shape[-1] != V:  # a converted head keeps its shape; guard against surprises
            raise RuntimeError(f"logits have {logits.shape[-1]} classes, vocabulary has {V}")
        return ModelOutput(logits=logits, loss=loss)

    @staticmethod
    def loss(
        logits: torch.Tensor,  # (B, T, V)
        targets: torch.Tensor,  # (B, T)
        loss_mask: torch.Tensor | None = None,  # (B, T)
    ) -> torch.Tensor:
        """Mean cross-entropy over positions with ``loss_mask == 1`` and ``targets != -100``
        (zero, with a gradient, when there are none)."""
        if targets.shape != logits.shape[:2]:
            raise ValueError(
                f"targets shape {tuple(targets.shape)} must equal input_ids shape "
                f"{tuple(logits.shape[:2])}"
            )
        ce = F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="none"
        ).view_as(targets)  # (B, T); 0 where ignored
        keep = targets != -100
        if loss_mask is not None:
            if loss_mask.shape != targets.shape:
                raise ValueError(
                    f"loss_mask shape {tuple(loss_mask.shape)} must equal targets shape "
                    f"{tuple(targets.shape)}"
                )
            keep = keep & (loss_mask != 0)
        weight = keep.to(ce.dtype)
        if loss_mask is not None and loss_mask.is_floating_point():
            weight = weight * loss_mask.to(ce.dtype)  # per-target weights (e.g. task weights)
            return (ce * weight).sum() / weight.sum().clamp(min=1e-12)
        return (ce * weight).sum() / weight.sum().clamp(min=1.0)

    # ------------------------------------------------------------------ accounting
    def weight_nbytes(self) -> int:
        """Bytes the weights occupy as stored: flex mantissas + exponents, or float."""
        total = 0
        for p in self._unique_parameters():
            if isinstance(p, FlexWeight):
                total += p.nbytes_stored
            else:
                total += p.numel() * p.element_size()
        return total

    def _unique_parameters(self) -> list[nn.Parameter]:
        seen: dict[int, nn.Parameter] = {}
        for p in self.parameters():  # parameters() already skips repeats of one object
            seen.setdefault(id(p), p)
        return list(seen.values())
