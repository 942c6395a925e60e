"""The transformer's parts: RMSNorm, rotary position embedding, SwiGLU MLP, QK-norm attention.

Every weight matmul is an ``nn.Linear`` and both attention matmuls are ``omniflex.flex.Matmul``
call sites, so ``convert_to_flex`` (or ``convert_to_float_emulation``) finds and swaps all of
them; norms, RoPE and softmax stay float32, as in the paper (Flexpoint covers the tensors that
cross a matmul). Attention has a pure-PyTorch reference path (the one flex runs through) and,
for unconverted float32 models, a ``scaled_dot_product_attention`` fast path; tests check that
the two agree.

Shapes: B batch, T new positions, S cached + new positions, C = dim, H query heads,
Hkv key/value heads, D head size.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from omniflex.flex import FlexMatmul, Matmul
from omniflex.flex.attention import blocked_attention_applies, flex_causal_attention

if TYPE_CHECKING:
    from omniflex.model.kv_cache import KVCache

__all__ = [
    "MLP",
    "AttentionImpl",
    "RMSNorm",
    "RotaryEmbedding",
    "SelfAttention",
    "additive_mask",
    "apply_rope",
    "causal_mask",
    "document_mask",
    "rms_norm",
]

AttentionImpl = Literal["auto", "reference", "sdpa"]


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (float32; not a flex op)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / rms(x) * weight`` over the last dim; ``weight`` broadcasts against ``x``."""
    # Written out: on CPU this beats F.rms_norm for the small tensors of decoding.
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class RotaryEmbedding(nn.Module):
    """cos/sin tables of RoPE for positions ``[0, max_seq_len)`` (rotate-half convention).

    The sin table carries the rotation's sign (``-sin`` on the first half), so applying RoPE
    is ``x * cos + swap_halves(x) * sin``: three kernels instead of five.
    """

    def __init__(self, head_dim: int, max_seq_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)  # (L, D/2)
        cos = torch.cat([angles.cos(), angles.cos()], dim=-1)  # (L, D)
        signed_sin = torch.cat([-angles.sin(), angles.sin()], dim=-1)  # (L, D)
        # Not persistent: derived from the config, so checkpoints stay free of them.
        self.register_buffer("cos", cos.float(), persistent=False)
        self.register_buffer("sin", signed_sin.float(), persistent=False)
        self.max_seq_len = max_seq_len

    def forward(
        self, positions: torch.Tensor | None = None, *, start: int = 0, length: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (T, 1, D) or (B, T, 1, D) (broadcast over heads), for
        ``positions`` (T,) or (B, T), or for the range ``[start, start + length)``."""
        if positions is None:
            last = start + length - 1
            cos, sin = self.cos[start : start + length], self.sin[start : start + length]
        else:
            last = int(positions.max()) if positions.numel() else 0
            cos, sin = self.cos[positions], self.sin[positions]
        if last >= self.max_seq_len:
            raise ValueError(
                f"position {last} is beyond max_seq_len ({self.max_seq_len}); "
                "truncate the context or build the model with a larger max_seq_len"
            )
        return cos.unsqueeze(-2), sin.unsqueeze(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, T, H, D) by ``RotaryEmbedding`` tables (T, 1, D) or (B, T, 1, D)."""
    half = x.shape[-1] // 2
    swapped = torch.cat([x[..., half:], x[..., :half]], dim=-1)  # sign lives in ``sin``
    return torch.addcmul(x * cos, swapped, sin)


class MLP(nn.Module):
    """SwiGLU: ``w2(silu(x W1) * (x W3))`` with W1 and W3 fused into one Linear (one flex op)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = hidden
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.dropout_p = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).split(self.hidden, dim=-1)  # (B, T, hidden) each
        y = self.w2(F.silu(gate) * up)  # (B, T, C)
        if self.dropout_p and self.training:
            y = F.dropout(y, self.dropout_p)
        return y


class SelfAttention(nn.Module):
    """Causal multi-head (or grouped-query) attention with QK-norm, RoPE and a KV cache.

    QK-norm (RMSNorm over each head's queries and keys, before RoPE) bounds the attention
    logits, which keeps mixed-modal training stable (Chameleon) and — for Flexpoint — keeps the
    ``q @ k^T`` operands in a narrow, predictable range that one shared exponent suits.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int,
        *,
        norm_eps: float = 1e-5,
        dropout: float = 0.0,
        layer_index: int = 0,
    ) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = dim // n_heads
        self.layer_index = layer_index
        self.dropout_p = dropout
        self.impl: AttentionImpl = "auto"
        self.wqkv = nn.Linear(dim, (n_heads + 2 * n_kv_heads) * self.head_dim, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim, norm_eps)
        self.k_norm = RMSNorm(self.head_dim, norm_eps)
        self.qk = Matmul()  # scores = q @ k^T
        self.av = Matmul()  # out = probs @ v

    def forward(
        self,
        x: torch.Tensor,  # (B, T, C)
        cos: torch.Tensor,  # (T, 1, D) or (B, T, 1, D), from RotaryEmbedding
        sin: torch.Tensor,
        mask: torch.Tensor | None,  # (T, S) bool, True = may attend; None = causal over T
        cache: KVCache | None = None,
        segments: torch.Tensor | None = None,  # (B, T) document ids of packed documents
    ) -> torch.Tensor:
        """``segments`` (training on packed documents, no cache) makes the mask block-diagonal
        as well as causal: a position attends only to earlier positions of its own document."""
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.wqkv(x).view(B, T, H + 2 * Hkv, D)
        qk, v = qkv.split([H + Hkv, Hkv], dim=2)  # (B, T, H + Hkv, D), (B, T, Hkv, D)
        # QK-norm and RoPE on queries and keys together: one set of kernels for both.
        qk_gain = torch.cat([self.q_norm.weight.expand(H, D), self.k_norm.weight.expand(Hkv, D)])
        qk = apply_rope(rms_norm(qk, qk_gain, self.q_norm.eps), cos, sin)
        q, k = qk.transpose(1, 2).split([H, Hkv], dim=1)  # (B, H, T, D), (B, Hkv, T, D)
        v = v.transpose(1, 2)  # (B, Hkv, T, D)
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v)  # (B, Hkv, S, D)
        S = k.shape[2]
        causal = mask is None  # the model's own mask: causal, after any cached positions
        if segments is not None:
            if cache is not None or not causal or segments.shape != (B, T):
                raise ValueError(
                    "segments (B, T) apply to training on packed documents: causal attention "
                    f"over the T positions, no cache and no mask; got {tuple(segments.shape)}"
                )
            if not (T > 1 and self._use_blocked()):
                mask = document_mask(segments)  # (B, 1, T, T)
        elif causal and 1 < T < S:
            mask = causal_mask(T, S, device=x.device)
        if self._use_sdpa():
            y = self._sdpa(q, k, v, mask)
        elif causal and T > 1 and self._use_blocked():
            y = self.blocked_attention(q, k, v, segments)
        else:
            y = self.reference_attention(q, k, v, mask)
        y = self.wo(y.transpose(1, 2).reshape(B, T, H * D))  # (B, T, C)
        if self.dropout_p and self.training:
            y = F.dropout(y, self.dropout_p)
        return y

    def _use_sdpa(self) -> bool:
        # Converted call sites (flex, emulation) must run their own matmuls: reference path.
        plain = type(self.qk) is Matmul and type(self.av) is Matmul
        if self.impl == "sdpa" and not plain:
            raise ValueError(
                "attention impl 'sdpa' needs unconverted float32 matmuls, but this model's "
                f"attention runs through {type(self.qk).__name__}; use impl 'auto' or 'reference'"
            )
        return plain and self.impl != "reference"

    def _use_blocked(self) -> bool:
        # Flex training's path (see blocked_attention); the written-out one stays the reference
        # for dropout, stochastic rounding, frozen inference and flex_disabled.
        qk, av = self.qk, self.av
        return (
            self.impl == "auto"
            and isinstance(qk, FlexMatmul)
            and isinstance(av, FlexMatmul)
            and qk.flex_enabled
            and av.flex_enabled
            and not (self.training and self.dropout_p > 0)
            and blocked_attention_applies(qk.op, av.op)
        )

    def _sdpa(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        T = q.shape[2]
        return F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=mask,
            dropout_p=self.dropout_p if self.training else 0.0,
            is_causal=mask is None and T > 1,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )  # fmt: skip

    def reference_attention(
        self,
        q: torch.Tensor,  # (B, H, T, D)
        k: torch.Tensor,  # (B, Hkv, S, D)
        v: torch.Tensor,  # (B, Hkv, S, D)
        mask: torch.Tensor | None,  # (T, S) bool; None = causal (T == S) or all (T == 1)
    ) -> torch.Tensor:
        """Attention written out: ``softmax(q k^T / sqrt(D) + mask) v`` through ``qk``/``av``."""
        T, D = q.shape[2:]
        S = k.shape[2]
        k, v = self._expand_kv(k, v)  # (B, H, S, D)
        scores = self.qk(q * (1.0 / math.sqrt(D)), k.transpose(-1, -2))  # (B, H, T, S)
        if mask is None and T > 1:
            mask = causal_mask(T, S, device=q.device)
        if mask is not None:
            scores = scores + additive_mask(mask, scores.dtype)
        probs = torch.softmax(scores.float(), dim=-1)  # (B, H, T, S)
        if self.training and self.dropout_p > 0:
            probs = F.dropout(probs, self.dropout_p)
        return self.av(probs, v)  # (B, H, T, D)

    def blocked_attention(
        self,
        q: torch.Tensor,  # (B, H, T, D)
        k: torch.Tensor,  # (B, Hkv, S, D)
        v: torch.Tensor,  # (B, Hkv, S, D)
        segments: torch.Tensor | None = None,  # (B, S)
    ) -> torch.Tensor:
        """Causal flex attention (the T queries are the last T of S positions), a block of
        queries at a time: ``omniflex.flex.attention.flex_causal_attention`` through the ``qk``
        and ``av`` ops. The reference path's flex numbers and Autoflex statistics up to float32
        summation order, without materialising (B, H, T, S) tensors; of the masked keys' work
        only the products whose statistics the reference counts are computed."""
        D = q.shape[-1]
        k, v = self._expand_kv(k, v)  # (B, H, S, D)
        return flex_causal_attention(
            q * (1.0 / math.sqrt(D)), k, v, self.qk.op, self.av.op, segments=segments
        )

    def _expand_kv(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grouped-query keys and values (B, Hkv, S, D) repeated to every query head."""
        B, Hkv, S, D = k.shape
        if Hkv == self.n_heads:
            return k, v
        groups = self.n_heads // Hkv
        k = k.unsqueeze(2).expand(B, Hkv, groups, S, D).reshape(B, self.n_heads, S, D)
        v = v.unsqueeze(2).expand(B, Hkv, groups, S, D).reshape(B, self.n_heads, S, D)
        return k, v


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``mask`` (True = may attend) as a bias to add to attention scores: 0 or -inf.

    Added rather than ``masked_fill``ed: the backward of an addition passes the gradient through
    as it is, where masked_fill's copies all (B, H, T, S) of it to zero entries that are zero
    already (their probabilities are 0). The forward values are the same."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill_(~mask, float("-inf"))


def document_mask(segments: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool from (B, T) document ids: causal, and only within a document."""
    T = segments.shape[1]
    same = segments.unsqueeze(2) == segments.unsqueeze(1)  # (B, T, T)
    return (same & causal_mask(T, T, device=segments.device)).unsqueeze(1)


def causal_mask(T: int, S: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, S) bool: the i-th of T new positions (the last T of S) sees keys ``j <= S - T + i``."""
    offset = S - T
    rows = torch.arange(T, device=device).unsqueeze(1) + offset
    return torch.arange(S, device=device).unsqueeze(0) <= rows
