"""Flex autograd ops: every operand, result, delta and gradient is a flex tensor.

Each op quantises its float inputs with their own Autoflex states, computes in float32 (the
paper's hardware accumulated wider than the 16-bit operands; float32 accumulation of int16 x
int16 products is the simulator's semantics), and re-quantises the result. Backward quantises
the incoming delta, and each outgoing delta and weight gradient. Inputs are saved for backward
as their integer mantissas, not as float32. A result the op computed itself (its output, its
gradients) is ``owned``: large ones are quantised in its own storage (``requantize_``), and a
decoded operand's buffer takes the gradient of the same shape, so backward allocates less.

``FlexOp`` holds the states of one op instance, keyed by role (``input``, ``output``,
``grad_output``, ``grad_input``, ``grad_weight``…), created on first use.

**Frozen ops** (``FlexOp.frozen``, set by ``omniflex.flex.flex_frozen``) are the inference path:
outside autograd, each operand is quantised at its state's current exponent — the one Autoflex
predicted at the end of training — with saturation and no statistics, no overflow recompute and
no device-to-host reads. The numbers are still flex16 values; the exponents simply stop moving.
That makes inference deterministic (a token's activations no longer depend on what ran before),
strictly causal, safe to share between threads, and several times cheaper per small op. A state
that never ran initialises once through the ordinary path. Weights' float32 views are decoded
once and cached while the mantissas are unchanged (``cache_weights``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from omniflex.flex.autoflex_device import AnyAutoflexState
from omniflex.flex.config import FlexConfig
from omniflex.flex.errors import FlexTypeError
from omniflex.flex.format import FlexTensor
from omniflex.flex.weight import FlexWeight

__all__ = [
    "FlexOp",
    "fixed_values",
    "fixed_values_reference",
    "flex_bmm",
    "flex_conv2d",
    "flex_embedding",
    "flex_linear",
    "flex_matmul",
]


class FlexOp:
    """Autoflex states of one op instance (one per tensor use)."""

    def __init__(self, name: str, config: FlexConfig | None = None) -> None:
        self.name = name
        self.config = config or FlexConfig()
        self.states: dict[str, AnyAutoflexState] = {}
        self.clock = 0
        self.frozen = False  # inference: fixed exponents, no statistics (see the module doc)
        self.cache_weights = True
        self._weight_cache: dict[str, tuple[tuple[Any, ...], torch.Tensor]] = {}

    def state(self, role: str) -> AnyAutoflexState:
        st = self.states.get(role)
        if st is None:
            st = self.config.new_autoflex_state(f"{self.name}.{role}")
            self.states[role] = st
        return st

    def tick(self) -> None:
        self.clock += 1

    def values(self, role: str, x: torch.Tensor, *, owned: bool = False) -> torch.Tensor:
        """Quantise ``x`` for ``role``; float32 values on the flex grid. ``owned``: ``x`` is a
        result of this op that nothing else reads, so the values may take its storage."""
        out = self.state(role).quantize(
            x, want_mantissa=False, want_values=True, overwrite=owned, **self._kwargs()
        )  # fmt: skip
        return out.values  # type: ignore[return-value]

    def flex_and_values(self, role: str, x: torch.Tensor) -> tuple[FlexTensor, torch.Tensor]:
        """Quantise ``x`` for ``role``; the storage (to save for backward) and float32 values."""
        st = self.state(role)
        out = st.quantize(x, want_mantissa=True, want_values=True, **self._kwargs())
        return FlexTensor(out.mantissa, out.exponent, st.format), out.values  # type: ignore[arg-type]

    def output(self, role: str, y: torch.Tensor) -> torch.Tensor:
        """The op's float32 result ``y`` (which it owns) on the flex grid, if outputs are."""
        return self.values(role, y, owned=True) if self.config.quantize_outputs else y

    # ------------------------------------------------------------ frozen (inference)
    @property
    def fast(self) -> bool:
        """Whether this call takes the frozen path (frozen, and autograd is off)."""
        return self.frozen and not torch.is_grad_enabled()

    def frozen_values(self, role: str, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the flex grid at the state's current exponent, saturating; no statistics."""
        st = self.state(role)
        if not st.initialized:
            return self.values(role, x)  # first use: Autoflex initialisation, once
        return fixed_values(x, st.exponent, st.format.max_mantissa)

    def frozen_output(self, role: str, y: torch.Tensor) -> torch.Tensor:
        return self.frozen_values(role, y) if self.config.quantize_outputs else y

    def frozen_weight(self, role: str, w: torch.Tensor | None) -> torch.Tensor | None:
        """A weight's float32 values, decoded once while its mantissas are unchanged."""
        if w is None:
            return None
        if not isinstance(w, FlexWeight):  # master mode: quantised per use
            return self.frozen_values(role, w.detach())
        m = w.mantissa
        e = w.exponent  # a device-resident one changes in place: its version says when
        key = (m.data_ptr(), m._version, (e.data_ptr(), e._version) if torch.is_tensor(e) else e)
        hit = self._weight_cache.get(role)
        if hit is not None and hit[0] == key:
            return hit[1]
        values = w.dequantize()
        if self.cache_weights:
            self._weight_cache[role] = (key, values)
        return values

    def clear_cache(self) -> None:
        self._weight_cache.clear()

    def _kwargs(self) -> dict[str, Any]:
        return {
            "stochastic": self.config.rounding == "stochastic",
            "kernel": self.config.kernel,
            "clock": self.clock,
            "module": self.name,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"clock": self.clock, "states": {k: s.state_dict() for k, s in self.states.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clock = int(state["clock"])
        for role, st in state["states"].items():
            self.state(role).load_state_dict(st)


def fixed_values_reference(x: torch.Tensor, exponent: int, max_mantissa: int) -> torch.Tensor:
    """float32 ``x`` rounded (half to even) onto the grid ``m * 2**exponent``, ``|m| <=
    max_mantissa``: the quantisation of ``quantize_tensor`` without its statistics."""
    scale = math.ldexp(1.0, exponent)
    scaled = x.float() * math.ldexp(1.0, -exponent)  # a new tensor: safe to modify in place
    return scaled.round_().clamp_(-max_mantissa, max_mantissa).mul_(scale)


#: Up to this many elements ``fixed_values`` takes ATen's fused fake-quantisation kernel: one
#: launch instead of four (decoding one token: 7 µs instead of 15), but it is not vectorised,
#: so larger tensors (prefill, training shapes) are faster on the reference's four passes.
FUSED_MAX_ELEMENTS = 1024


def fixed_values(x: torch.Tensor, exponent: int, max_mantissa: int) -> torch.Tensor:
    """``fixed_values_reference``, through the fused kernel for small tensors: per-tensor fake
    quantisation with a power-of-two scale, zero point 0 and range ``±max_mantissa`` rounds half
    to even and saturates exactly as the reference does (tested equal)."""
    if x.numel() > FUSED_MAX_ELEMENTS:
        return fixed_values_reference(x, exponent, max_mantissa)
    return torch.fake_quantize_per_tensor_affine(
        x.float(), math.ldexp(1.0, exponent), 0, -max_mantissa, max_mantissa
    )


@torch.compiler.disable(reason="flex ops update Autoflex state inside their autograd Function")
def _apply(fn: type[torch.autograd.Function], *args: Any) -> torch.Tensor:
    """``fn.apply(*args)``, run eagerly even inside ``torch.compile``.

    A flex op's autograd Function updates Autoflex states as it runs, and a ``FlexWeight`` is
    not a traceable tensor subclass. Traced, dynamo breaks the graph at such a Function, or —
    with paper-mode weights — traces through it and drops it from autograd, so the loss loses
    its gradients without an error. Until the ops are written to be traced, each runs eagerly
    between compiled regions, with the eager numbers (``tests/flex/test_compile.py``)."""
    return fn.apply(*args)


def _weight_operand(op: FlexOp, role: str, w: torch.Tensor | None) -> FlexTensor | None:
    """Flex storage of a weight: itself in paper mode, quantised per use in master mode."""
    if w is None:
        return None
    if isinstance(w, FlexWeight):
        return w.flex()
    st = op.state(role)
    return st.to_flex(w.detach(), kernel=op.config.kernel, clock=op.clock, module=op.name)


def _check_input(op: FlexOp, x: torch.Tensor) -> torch.Tensor:
    if not x.is_floating_point():
        # Let the input state raise its named error.
        op.state("input").quantize(x, module=op.name)
    return x.float()


# --------------------------------------------------------------------------- linear
class _FlexLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, op: FlexOp):  # type: ignore[override]
        x_flex, x_values = op.flex_and_values("input", x)
        w_flex = _weight_operand(op, "weight", weight)
        b_flex = _weight_operand(op, "bias", bias)
        w_values = w_flex.to_float()
        b_values = None if b_flex is None else b_flex.to_float()
        y = F.linear(x_values, w_values, b_values)  # (..., out) float32 accumulation
        # Activations are saved as int16 mantissas; the weight's float32 view is kept for the
        # backward matmul instead of being decoded a second time (a transient, not a master copy).
        ctx.op, ctx.x_flex, ctx.w_values, ctx.has_bias = op, x_flex, w_values, bias is not None
        return op.output("output", y)

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        op: FlexOp = ctx.op
        g = op.values("grad_output", grad_y)  # (..., out)
        g2 = g.reshape(-1, g.shape[-1])  # (B, out)
        grad_x = grad_w = grad_b = None
        x2 = None
        if ctx.needs_input_grad[1]:
            x2 = ctx.x_flex.to_float().reshape(-1, ctx.w_values.shape[1])  # (B, in)
            grad_w = g2.t() @ x2  # (out, in)
        if ctx.needs_input_grad[0]:
            # (B, in), like x: the decoded x, read above, takes the product (no new buffer).
            grad_x = op.values("grad_input", torch.mm(g2, ctx.w_values, out=x2), owned=True)
            grad_x = grad_x.view(*g.shape[:-1], -1)
        if grad_w is not None:
            grad_w = op.values("grad_weight", grad_w, owned=True)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = op.values("grad_bias", g2.sum(0), owned=True)
        return grad_x, grad_w, grad_b, None


def flex_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, op: FlexOp
) -> torch.Tensor:
    """``F.linear`` in Flexpoint with the states of ``op``."""
    x = _check_input(op, x)
    if op.fast:  # no tick: a frozen op changes no state
        w, b = op.frozen_weight("weight", weight), op.frozen_weight("bias", bias)
        return op.frozen_output("output", F.linear(op.frozen_values("input", x), w, b))
    op.tick()
    return _apply(_FlexLinearFn, x, weight, bias, op)


# --------------------------------------------------------------------------- conv2d
class _FlexConv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, op: FlexOp, geometry):  # type: ignore[override]
        stride, padding, dilation, groups = geometry
        x_flex, x_values = op.flex_and_values("input", x)
        w_flex = _weight_operand(op, "weight", weight)
        b_flex = _weight_operand(op, "bias", bias)
        b_values = None if b_flex is None else b_flex.to_float()
        y = F.conv2d(x_values, w_flex.to_float(), b_values, stride, padding, dilation, groups)
        ctx.op, ctx.geometry, ctx.x_flex, ctx.w_flex = op, geometry, x_flex, w_flex
        ctx.bias_shape = None if bias is None else list(bias.shape)
        return op.output("output", y)

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        op: FlexOp = ctx.op
        stride, padding, dilation, groups = ctx.geometry
        g = op.values("grad_output", grad_y)
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.bias_shape is not None]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g, ctx.x_flex.to_float(), ctx.w_flex.to_float(), ctx.bias_shape,
            list(stride), list(padding), list(dilation), False, [0, 0], groups, mask,
        )  # fmt: skip
        grad_x = op.values("grad_input", gx, owned=True) if mask[0] else None
        grad_w = op.values("grad_weight", gw, owned=True) if mask[1] else None
        needs_b = mask[2] and ctx.needs_input_grad[2]
        grad_b = op.values("grad_bias", gb, owned=True) if needs_b else None
        return grad_x, grad_w, grad_b, None, None


def flex_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    op: FlexOp,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv2d`` (zero padding given as integers) in Flexpoint."""
    op.tick()
    geometry = (tuple(stride), tuple(padding), tuple(dilation), groups)
    return _apply(_FlexConv2dFn, _check_input(op, x), weight, bias, op, geometry)


# --------------------------------------------------------------------------- embedding
class _FlexEmbeddingFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, idx, weight, op: FlexOp, padding_idx):  # type: ignore[override]
        w_flex = _weight_operand(op, "weight", weight)
        # Gathered rows already lie on the table's grid: no re-quantisation needed.
        y = F.embedding(idx, w_flex.mantissa).float() * w_flex.scale  # (..., dim)
        ctx.op, ctx.padding_idx, ctx.num, ctx.idx = op, padding_idx, weight.shape[0], idx
        return y

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        op: FlexOp = ctx.op
        if not ctx.needs_input_grad[1]:
            return None, None, None, None
        g = op.values("grad_output", grad_y)
        dim = g.shape[-1]
        grad_w = torch.zeros(ctx.num, dim, dtype=torch.float32, device=g.device)
        grad_w.index_add_(0, ctx.idx.reshape(-1), g.reshape(-1, dim))
        if ctx.padding_idx is not None:
            grad_w[ctx.padding_idx] = 0
        return None, op.values("grad_weight", grad_w, owned=True), None, None


def flex_embedding(
    idx: torch.Tensor, weight: torch.Tensor, op: FlexOp, padding_idx: int | None = None
) -> torch.Tensor:
    """``F.embedding`` in Flexpoint: rows of a flex table; sparse gradients are not supported."""
    if idx.is_floating_point() or idx.is_complex():
        raise FlexTypeError(
            f"flex embedding '{op.name}' needs integer indices, got {idx.dtype}; "
            "pass token ids as torch.long"
        )
    if op.fast and isinstance(weight, FlexWeight):
        # Gathered rows already lie on the table's grid: decode only the rows used.
        return F.embedding(idx, weight.mantissa).float() * weight.flex().scale
    op.tick()
    return _apply(_FlexEmbeddingFn, idx, weight, op, padding_idx)


# --------------------------------------------------------------------------- matmul
class _FlexMatmulFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, op: FlexOp):  # type: ignore[override]
        a_flex, a_values = op.flex_and_values("input_a", a)
        b_flex, b_values = op.flex_and_values("input_b", b)
        y = torch.matmul(a_values, b_values)
        ctx.op, ctx.a_flex, ctx.b_flex = op, a_flex, b_flex
        return op.output("output", y)

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        op: FlexOp = ctx.op
        g = op.values("grad_output", grad_y)  # (..., n, m)
        need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        a_shape, b_shape = ctx.a_flex.shape, ctx.b_flex.shape
        grad_a = grad_b = a = None
        # Each saved operand is decoded only for the gradient that reads it. sum_to_size reduces
        # broadcast batch dims into a new tensor or returns the product itself: either way a
        # result this op owns. grad_a is still quantised before grad_b (stochastic rounding
        # draws its noise in that order).
        if need_b:
            a = ctx.a_flex.to_float()  # (..., n, k)
            grad_b = (a.transpose(-1, -2) @ g).sum_to_size(b_shape)
        if need_a:
            b_t = ctx.b_flex.to_float().transpose(-1, -2)  # (..., m, k)
            batch = torch.broadcast_shapes(g.shape[:-2], b_t.shape[:-2])
            # Unless batch dims broadcast, the product has a's shape: the decoded a, read
            # above, takes it (no new buffer; attention's probabilities are the largest).
            out = a if a is not None and (*batch, g.shape[-2], b_t.shape[-1]) == a_shape else None
            grad_a = torch.matmul(g, b_t, out=out).sum_to_size(a_shape)
            grad_a = op.values("grad_a", grad_a, owned=True)
        if grad_b is not None:
            grad_b = op.values("grad_b", grad_b, owned=True)
        return grad_a, grad_b, None


def flex_matmul(a: torch.Tensor, b: torch.Tensor, op: FlexOp) -> torch.Tensor:
    """``a @ b`` (batched, broadcasting) with both operands and the result in Flexpoint.

    For attention and custom layers: ``op`` (a ``FlexOp``, or the ``.op`` of a ``FlexMatmul``
    module so that its states reach ``state_dict``) keeps the Autoflex states of this call site.
    """
    if a.dim() < 2 or b.dim() < 2:
        raise ValueError(
            f"flex_matmul '{op.name}' needs operands with >= 2 dims, got {a.dim()} and {b.dim()}"
        )
    a = _check_input(op, a)
    b = _check_input(op, b)
    if op.fast:
        y = torch.matmul(op.frozen_values("input_a", a), op.frozen_values("input_b", b))
        return op.frozen_output("output", y)
    op.tick()
    return _apply(_FlexMatmulFn, a, b, op)


def flex_bmm(a: torch.Tensor, b: torch.Tensor, op: FlexOp) -> torch.Tensor:
    """``torch.bmm`` in Flexpoint: (B, n, k) @ (B, k, m)."""
    if a.dim() != 3 or b.dim() != 3:
        raise ValueError(
            f"flex_bmm '{op.name}' needs 3-D operands, got {a.dim()}-D and {b.dim()}-D"
        )
    return flex_matmul(a, b, op)
