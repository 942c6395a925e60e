"""``CompiledForward``: the inference forward as one ``torch.compile``d graph over a ``KVCache``.

Decoding the tiny model eagerly is dominated by overhead, not arithmetic: one token runs a few
hundred small kernels, each dispatched from Python, and a flex model adds the rounding of every
operand. This module writes the same forward — embedding, blocks, head — as one function of
tensors, with the weights snapshotted (flex weights decoded once) and the flex exponents frozen
as constants, and hands it to ``torch.compile``: inductor fuses norms, RoPE, every flex rounding
and the encoding of the new cache entries into a few C++ loops around the matmuls, and the whole
step runs without returning to Python. A flex16 cache's stored positions are decoded just before
the graph, by ATen (inductor does not vectorise int16 on CPU). A flex16+5 model's decode steps
multiply on the int16 mantissas (``omniflex.flex.int16_matvec``, where it is available: half the
weight bytes, read over half of a step); prefill chunks multiply the decoded float32 weights.

**Reference.** Called with ``compile=False`` the same function runs eagerly and performs the
ops of ``OmniModel.forward`` in the same order, so its logits and cache entries equal the
model's bit for bit (tested, float32 and flex16+5). Compiled, inductor's fused reductions
(RMSNorm, softmax) may round differently in the last float32 bit, and a flex operand that lies on
a rounding boundary may then move one flex step; tests bound the difference.

**Semantics.** float32 models: as eager (SDPA attention; a compiled one-token step uses the
explicit matmuls instead, faster there). flex16+5 models: the frozen inference
semantics of ``omniflex.flex.ops`` — every operand and result rounded half to even onto the grid
of its state's exponent, saturating — so only frozen models are accepted (``load_pretrained``
freezes; ``set_flex_frozen`` does it by hand), and only once every state has run once (the
first eager forward initialises them; ``ready`` says whether it has).

**Cache protocol.** The graph reads the cached positions ``[0, length)`` and returns the new
tokens' keys and values (flex16: encoded) for all layers; ``KVCache.append_layers`` writes them
in one copy each. Attention over cached plus new positions concatenates instead of writing
first and reading back — the same values.

Shapes: L layers, B batch, T new positions, P cached positions, S = P + T, C width, H query
heads, Hkv key/value heads, D head size, V vocabulary.
"""

from __future__ import annotations

import itertools
import math
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omniflex.flex import AutoflexState, FlexEmbedding, FlexLinear, FlexMatmul, FlexWeight, Matmul
from omniflex.flex.int16_matvec import MAX_MANTISSA
from omniflex.flex.int16_matvec import available as int16_matvec_available
from omniflex.model.kv_cache import KVCache, flex16_round
from omniflex.model.layers import additive_mask, apply_rope, causal_mask, rms_norm
from omniflex.model.transformer import OmniModel

__all__ = ["CompiledForward", "FastPathUnsupported"]

#: (1 / scale, scale, max mantissa) of a frozen flex rounding, or None: no rounding (float32).
Rounding = tuple[float, float, float] | None


class FastPathUnsupported(ValueError):
    """The model cannot run through ``CompiledForward`` (the message says why and what to do)."""


@dataclass(frozen=True)
class _Int16:
    """A flex16 linear's operands for ``flex16_linear``: the weight's mantissas (a copy, as the
    float values are one) and exponent, the input state's exponent and largest mantissa."""

    mantissa: torch.Tensor  # (out, in) int16
    w_exponent: int
    x_exponent: int
    max_mantissa: int


@dataclass(frozen=True)
class _Linear:
    weight: torch.Tensor  # (out, in) float32 values (flex: decoded once)
    bias: torch.Tensor | None
    input: Rounding
    output: Rounding
    int16: _Int16 | None = None  # set: compiled one-row products run on the mantissas


@dataclass(frozen=True)
class _Matmul:
    a: Rounding
    b: Rounding
    output: Rounding


@dataclass(frozen=True)
class _Layer:
    attn_norm: torch.Tensor  # (C,)
    attn_eps: float
    wqkv: _Linear
    qk_gain: torch.Tensor  # (H + Hkv, D): q_norm's gain for the queries, k_norm's for the keys
    qk_eps: float
    qk: _Matmul | None  # None: float32 attention through SDPA
    av: _Matmul | None
    wo: _Linear
    mlp_norm: torch.Tensor
    mlp_eps: float
    w13: _Linear
    w2: _Linear
    hidden: int


#: The float32 "rounding" of a matmul that is not a flex op: none.
_FLOAT = _Matmul(None, None, None)


def _round(x: torch.Tensor, r: Rounding) -> torch.Tensor:
    """``omniflex.flex.ops.fixed_values_reference`` with the constants of a frozen state."""
    if r is None:
        return x
    inv, scale, top = r
    return torch.round(x.float() * inv).clamp(-top, top) * scale


def _linear(x: torch.Tensor, p: _Linear) -> torch.Tensor:
    """A linear layer with its flex roundings. Compiled, one row (decoding) of a flex16 layer is
    multiplied on the int16 mantissas (``flex16_linear``: half the weight bytes read); the eager
    reference and prefill chunks multiply the decoded float32 weights."""
    q = p.int16
    if q is not None and torch.compiler.is_compiling() and x.shape[-2] == 1:
        y = torch.ops.omniflex.flex16_linear(
            x.float(), q.mantissa, q.x_exponent, q.w_exponent, q.max_mantissa
        )
        return _round(y if p.bias is None else y + p.bias, p.output)
    return _round(F.linear(_round(x.float(), p.input), p.weight, p.bias), p.output)


def _matmul(a: torch.Tensor, b: torch.Tensor, p: _Matmul) -> torch.Tensor:
    return _round(_rows_matmul(_round(a.float(), p.a), _round(b.float(), p.b)), p.output)


def _rows_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``. Compiled, a one-row ``a`` (decoding) gets a zero second row: inductor lowers a
    one-row batched matmul on CPU to a scalar multiply-and-sum loop (several times slower than
    the BLAS kernel at these sizes); with two rows the BLAS kernel runs. Rows are independent,
    so the first row is the product."""
    if torch.compiler.is_compiling() and a.shape[-2] == 1:
        return torch.matmul(torch.cat([a, torch.zeros_like(a)], dim=-2), b)[..., :1, :]
    return torch.matmul(a, b)


def _state_rounding(mod: nn.Module, role: str) -> Rounding:
    st = _ready_state(mod, role)
    return (math.ldexp(1.0, -st.exponent), math.ldexp(1.0, st.exponent), st.format.max_mantissa)


def _ready_state(mod: nn.Module, role: str) -> AutoflexState:
    op = mod.op  # type: ignore[attr-defined]
    st = op.states.get(role)
    if st is None or not st.initialized:
        raise _NotReady(f"{op.name}.{role}")
    return st


class _NotReady(Exception):
    """A flex state that has not run yet (the first eager forward initialises it)."""


def _check_frozen(mod: nn.Module) -> bool:
    """Whether ``mod`` is a flex module that rounds (False: a plain float module)."""
    if isinstance(mod, FlexLinear | FlexMatmul | FlexEmbedding):
        if not mod.flex_enabled:
            return False
        if not mod.op.frozen:
            raise FastPathUnsupported(
                f"flex module '{mod.op.name}' is not frozen; the compiled forward implements "
                "frozen inference only. Freeze the model with omniflex.flex.set_flex_frozen(model) "
                "(load_pretrained does) or decode eagerly"
            )
        return True
    if type(mod) not in (nn.Linear, nn.Embedding, Matmul):
        raise FastPathUnsupported(
            f"{type(mod).__name__} layers (precision emulation?) have no compiled forward; "
            "decode eagerly, or use a float32 or flex16+5 model"
        )
    return False


def _snap_linear(mod: nn.Module, int16: bool = False) -> _Linear:
    """``mod``'s weights and roundings; ``int16``: also its mantissas for ``flex16_linear``
    when it is a flex layer whose operands fit int16."""
    if not _check_frozen(mod):
        return _Linear(mod.weight.detach(), _opt(mod.bias), None, None)  # type: ignore[arg-type]
    op = mod.op  # type: ignore[attr-defined]
    if not isinstance(mod.weight, FlexWeight):
        raise FastPathUnsupported(
            f"'{op.name}' keeps float32 master weights (flex16+5-master); the compiled forward "
            "needs flex16+5 weights. Decode eagerly or export the model in flex16+5"
        )
    cfg = mod.flex_config  # type: ignore[attr-defined]
    out = _state_rounding(mod, "output") if cfg.quantize_outputs else None
    x_state, w = _ready_state(mod, "input"), mod.weight
    fits = max(x_state.format.max_mantissa, w.state.format.max_mantissa) <= MAX_MANTISSA
    q = None
    if int16 and fits and w.mantissa.dtype == torch.int16 and w.dim() == 2:
        q = _Int16(
            w.mantissa.detach().clone(), w.exponent, x_state.exponent, x_state.format.max_mantissa
        )
    return _Linear(
        op.frozen_weight("weight", mod.weight),
        op.frozen_weight("bias", mod.bias),
        _state_rounding(mod, "input"),
        out,
        q,
    )


def _snap_matmul(mod: nn.Module) -> _Matmul | None:
    if not _check_frozen(mod):
        return None
    cfg = mod.flex_config  # type: ignore[attr-defined]
    out = _state_rounding(mod, "output") if cfg.quantize_outputs else None
    return _Matmul(_state_rounding(mod, "input_a"), _state_rounding(mod, "input_b"), out)


def _opt(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


_instances = itertools.count()


def _own_compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn)`` on a copy of ``fn``'s code: dynamo keeps its compiled graphs and
    its recompilation budget per code object, and each model has graphs of its own (its flex
    exponents are constants in them), so instances must not share one. The graph's wrapper is
    generated as C++ (``cpp_wrapper``), not Python: a decode step launches ~100 kernels, and the
    Python wrapper's per-kernel overhead was 8–13 % of a tiny model's step here."""
    name = f"{fn.__name__}_{next(_instances)}"
    code = fn.__code__.replace(co_name=name)
    copy = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    return torch.compile(copy, fullgraph=True, options={"cpp_wrapper": True})


class CompiledForward:
    """``OmniModel.forward(ids, cache=cache, last_only=True)`` for inference, compiled.

    Args:
        model: a float32 model, or a frozen flex16+5 one (see the module docstring).
        compile: run through ``torch.compile`` (False: the same function eagerly — the
            reference the compiled graph is tested against).
        int16_matvec: decode steps of a flex16 model multiply on the int16 mantissas
            (``omniflex.flex.int16_matvec``; None: where the kernel is available). False keeps
            the float32 matmuls of decoded weights everywhere.

    Call it like the model: ``fast(ids, cache)`` appends ``ids`` (B, T) after the cache's
    positions and returns the last position's logits (B, 1, V). Until every flex state has run
    (``ready``), calls go to the eager model, which initialises them. Weights are read once:
    after changing them, call ``refresh()`` (changed exponents recompile the graph). Graphs are
    compiled on first use of each kind of call — a one-token step, a chunk; an empty or one-
    position cache is a kind of its own (``Generator`` calls it only from two positions on).
    """

    def __init__(
        self, model: OmniModel, *, compile: bool = True, int16_matvec: bool | None = None
    ) -> None:
        if model.training:
            raise FastPathUnsupported("the compiled forward is for inference; call model.eval()")
        on_cpu = next(model.buffers()).device.type == "cpu"
        kernel = on_cpu and (int16_matvec is not False) and int16_matvec_available()
        if int16_matvec and not kernel:
            raise FastPathUnsupported(
                "int16_matvec=True, but the int16 matvec kernel is not available here (it needs "
                "a model on an x86 CPU with AVX2, and a C++ compiler); pass int16_matvec=None "
                "or False"
            )
        self.model = model
        self.compile = compile
        self.int16_matvec = kernel
        self._snapshot: tuple[Any, ...] | None = None
        self._fn = _own_compiled(self._forward) if compile else self._forward
        _check_frozen(model.tok_emb)  # fail early on unsupported models
        _check_frozen(model.lm_head)

    # ------------------------------------------------------------------ snapshot
    @property
    def ready(self) -> bool:
        """Whether the graph can run (every flex state initialised); snapshots on success."""
        if self._snapshot is None:
            try:
                self._snapshot = self._take_snapshot()
            except _NotReady:
                return False
        return True

    def refresh(self) -> None:
        """Read the weights and exponents again (after training or loading new weights)."""
        self._snapshot = None

    @torch.no_grad()
    def _take_snapshot(self) -> tuple[Any, ...]:
        m = self.model
        emb = m.tok_emb
        if _check_frozen(emb):
            if not isinstance(emb.weight, FlexWeight):
                raise FastPathUnsupported(
                    "the embedding keeps float32 master weights (flex16+5-master); the compiled "
                    "forward needs flex16+5 weights"
                )
            table = emb.weight.dequantize()  # the rows the eager path decodes per use
        else:
            table = emb.weight.detach()
        layers, q16 = [], self.int16_matvec and self.compile  # the reference: float32 matmuls
        for block in m.blocks:
            attn, mlp = block.attn, block.mlp
            H, Hkv = attn.n_heads, attn.n_kv_heads
            D = attn.head_dim
            gain = torch.cat([attn.q_norm.weight.expand(H, D), attn.k_norm.weight.expand(Hkv, D)])
            qk, av = _snap_matmul(attn.qk), _snap_matmul(attn.av)
            if (qk is None) != (av is None) or (qk is None and attn.impl == "reference"):
                raise FastPathUnsupported(
                    "the compiled forward runs float32 attention through SDPA and flex attention "
                    f"through its flex matmuls; layer {attn.layer_index} mixes them (impl "
                    f"{attn.impl!r})"
                )
            layers.append(
                _Layer(
                    block.attn_norm.weight.detach(),
                    block.attn_norm.eps,
                    _snap_linear(attn.wqkv, q16),
                    gain.detach(),
                    attn.q_norm.eps,
                    qk,
                    av,
                    _snap_linear(attn.wo, q16),
                    block.mlp_norm.weight.detach(),
                    block.mlp_norm.eps,
                    _snap_linear(mlp.w13, q16),
                    _snap_linear(mlp.w2, q16),
                    mlp.hidden,
                )
            )
        head = _snap_linear(m.lm_head, q16)
        return table, tuple(layers), m.norm.weight.detach(), m.norm.eps, head

    # ------------------------------------------------------------------ calling
    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (B, 1, V) of the last of ``ids`` (B, T), appended after ``cache``'s positions."""
        if ids.dim() != 2 or ids.shape[1] == 0:
            raise ValueError(f"ids must be (batch, time) with time >= 1, got {tuple(ids.shape)}")
        if not self.ready:  # the eager forward initialises the flex states
            return self.model(ids, cache=cache, last_only=True).logits
        T, P = ids.shape[1], cache.length
        if cache.max_len < P + T:
            raise ValueError(
                f"KVCache is full: {P} cached + {T} new positions > max_len {cache.max_len}; "
                "truncate() it or build a larger one"
            )
        rope = self.model.rope
        if rope.max_seq_len < P + T:
            raise ValueError(
                f"position {P + T - 1} is beyond max_seq_len ({rope.max_seq_len}); "
                "truncate the context or build the model with a larger max_seq_len"
            )
        # Copies, not views: a view's storage offset (P * D) would be guarded and recompiled on.
        cos = rope.cos[P : P + T].unsqueeze(-2).clone()  # (T, 1, D)
        sin = rope.sin[P : P + T].unsqueeze(-2).clone()
        # A flex16 cache is decoded here, by ATen's vectorised kernels: inductor's CPU code
        # generator does not vectorise int16 loads, so decoding inside the graph runs scalar.
        past_k, past_v = cache.past_values()  # (L, B, Hkv, P, D) float32
        if T > 1:  # one chunk graph for every length (the rope rows too: else the first
            # chunk's length is baked in through them and the next length compiles again)
            for t, dim in ((ids, 1), (cos, 0), (sin, 0)):
                torch._dynamo.maybe_mark_dynamic(t, dim)
        torch._dynamo.maybe_mark_dynamic(past_k, 3)
        torch._dynamo.maybe_mark_dynamic(past_v, 3)
        flex16 = cache.storage == "flex16"
        logits, *new = self._fn(self._snapshot, ids, cos, sin, past_k, past_v, flex16)
        cache.append_layers(*new)
        return logits

    @torch.no_grad()
    def decode_rows(self, ids: Sequence[int], caches: Sequence[KVCache]) -> torch.Tensor:
        """One decode step of several sequences at once: ``ids[i]`` is appended after
        ``caches[i]``'s positions (each cache holds one sequence, of any length) and the next-
        token logits of every row come back, ``(len(ids), V)``. The rows' cached keys are laid
        side by side, padded to the longest and masked, and each row reads its own RoPE
        position, so row ``i`` computes what ``self([[ids[i]]], caches[i])`` computes (up to
        float summation order over the padding). One forward serves every row: what batches
        the sessions of a server."""
        if len(ids) != len(caches) or not ids:
            raise ValueError(
                f"decode_rows needs one cache per id, got {len(ids)} and {len(caches)}"
            )
        if any(c.batch_size != 1 for c in caches) or len({c.storage for c in caches}) != 1:
            raise ValueError("decode_rows takes one-sequence caches of one storage kind")
        if not self.ready or any(c.length < 1 for c in caches):
            raise ValueError(
                "decode_rows continues sequences: run each one's first forward through the "
                "model (or __call__) first"
            )
        lengths = [c.length for c in caches]
        for c in caches:
            if c.length + 1 > min(c.max_len, self.model.rope.max_seq_len):
                raise ValueError(
                    f"a sequence of {c.length} positions is at its cache or model limit; "
                    "truncate it or start a new one"
                )
        longest = max(lengths)
        pasts = [c.past_values() for c in caches]  # each (L, 1, Hkv, P_i, D)
        past_k = torch.cat([F.pad(k, (0, 0, 0, longest - k.shape[3])) for k, _ in pasts], dim=1)
        past_v = torch.cat([F.pad(v, (0, 0, 0, longest - v.shape[3])) for _, v in pasts], dim=1)
        at = torch.tensor(lengths)
        rope = self.model.rope
        cos = rope.cos[at][:, None, None, :].clone()  # (B, 1, 1, D): each row's own position
        sin = rope.sin[at][:, None, None, :].clone()
        keys = torch.arange(longest + 1)  # the padded past, then the new position
        valid = (keys[None, :] < at[:, None]) | (keys[None, :] == longest)
        key_mask = additive_mask(valid, torch.float32)[:, None, None, :]  # (B, 1, 1, S)
        device = past_k.device
        ids_t = torch.tensor([[int(i)] for i in ids], device=device)
        # one graph for every number of rows and every padded length
        for t, dims in ((past_k, (1, 3)), (past_v, (1, 3)), (key_mask, (0, 3)), (ids_t, (0,))):
            for dim in dims:
                torch._dynamo.maybe_mark_dynamic(t, dim)
        flex16 = caches[0].storage == "flex16"
        logits, *new = self._fn(self._snapshot, ids_t, cos.to(device), sin.to(device), past_k,
                                past_v, flex16, key_mask.to(device))  # fmt: skip
        for i, cache in enumerate(caches):
            cache.append_layers(*(t[:, i : i + 1] for t in new))
        return logits[:, 0]

    # ------------------------------------------------------------------ the graph
    @staticmethod
    def _forward(
        snapshot: tuple[Any, ...],
        ids: torch.Tensor,  # (B, T)
        cos: torch.Tensor,  # (T, 1, D)
        sin: torch.Tensor,
        past_k: torch.Tensor,  # (L, B, Hkv, P, D) float32 (a flex16 cache's decoded values)
        past_v: torch.Tensor,
        flex16: bool,  # the new entries are for a flex16 cache: encode them
        key_mask: torch.Tensor | None = None,  # (B, 1, 1, S) additive: rows of other lengths
    ) -> tuple[torch.Tensor, ...]:
        table, layers, norm_w, norm_eps, head = snapshot
        flex_cache = flex16
        B, T = ids.shape
        x = F.embedding(ids, table)  # (B, T, C)
        new_k, new_v, new_ke, new_ve = [], [], [], []
        for i, p in enumerate(layers):
            H_all, D = p.qk_gain.shape
            Hkv = past_k.shape[2]
            H = H_all - Hkv
            h = rms_norm(x, p.attn_norm, p.attn_eps)
            qkv = _linear(h, p.wqkv).view(B, T, H + 2 * Hkv, D)
            qk, v = qkv.split([H + Hkv, Hkv], dim=2)
            qk = apply_rope(rms_norm(qk, p.qk_gain, p.qk_eps), cos, sin)
            q, k = qk.transpose(1, 2).split([H, Hkv], dim=1)  # (B, H, T, D), (B, Hkv, T, D)
            v = v.transpose(1, 2)  # (B, Hkv, T, D)
            if flex_cache:
                # Encoded for the cache, as float mantissas and int32 exponents that
                # append_layers casts: an int16 tensor anywhere in an inductor kernel makes the
                # whole kernel scalar, and this one also rounds every cached key.
                fmt, dims = KVCache.FORMAT, (1, 3)
                (k_mf, k_e), (v_mf, v_e) = flex16_round(k, fmt, dims), flex16_round(v, fmt, dims)
                new_k.append(k_mf), new_v.append(v_mf)
                new_ke.append(k_e.squeeze(dims)), new_ve.append(v_e.squeeze(dims))
                k = torch.cat([past_k[i], k_mf * torch.exp2(k_e.float())], dim=2)  # (B,Hkv,S,D)
                v = torch.cat([past_v[i], v_mf * torch.exp2(v_e.float())], dim=2)
            else:
                new_k.append(k), new_v.append(v)
                k = torch.cat([past_k[i], k], dim=2)  # (B, Hkv, S, D)
                v = torch.cat([past_v[i], v], dim=2)
            S = k.shape[2]
            # float32 runs SDPA with the eager path's choice of mask — except a compiled decode
            # step: SDPA's kernel for one query row was slower here than the explicit matmuls
            # (the flex path's, without rounding), so the compiled graph takes those.
            sdpa = p.qk is None and not (torch.compiler.is_compiling() and T == 1)
            if sdpa:
                gqa = Hkv != H
                if key_mask is not None:  # one new position a row (decode_rows)
                    y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, enable_gqa=gqa)
                elif T == 1:
                    y = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
                elif T == S:
                    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
                else:
                    mask = causal_mask(T, S, device=x.device)
                    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
            else:
                qk_r, av_r = p.qk or _FLOAT, p.av or _FLOAT
                if Hkv != H:
                    g = H // Hkv
                    k = k.unsqueeze(2).expand(B, Hkv, g, S, D).reshape(B, H, S, D)
                    v = v.unsqueeze(2).expand(B, Hkv, g, S, D).reshape(B, H, S, D)
                # k rounded before the transpose (elementwise: the same values), so the rounded
                # keys are written in their own layout and the matmul reads them transposed.
                k_t = _round(k, qk_r.b).transpose(-1, -2)
                scores = _round(
                    _rows_matmul(_round(q * (1.0 / math.sqrt(D)), qk_r.a), k_t), qk_r.output
                )
                if T > 1:  # as SelfAttention.reference_attention masks
                    scores = scores + additive_mask(
                        causal_mask(T, S, device=x.device), scores.dtype
                    )
                if key_mask is not None:
                    scores = scores + key_mask
                y = _matmul(torch.softmax(scores.float(), dim=-1), v, av_r)  # (B, H, T, D)
            x = x + _linear(y.transpose(1, 2).reshape(B, T, H * D), p.wo)
            gate, up = _linear(rms_norm(x, p.mlp_norm, p.mlp_eps), p.w13).split(p.hidden, dim=-1)
            x = x + _linear(F.silu(gate) * up, p.w2)
        x = rms_norm(x, norm_w, norm_eps)[:, -1:]  # (B, 1, C)
        logits = _linear(x, head).float()  # (B, 1, V)
        if flex_cache:
            return (
                logits, torch.stack(new_k), torch.stack(new_v), torch.stack(new_ke),
                torch.stack(new_ve),
            )  # fmt: skip
        return logits, torch.stack(new_k), torch.stack(new_v)
