"""Causal attention through two flex matmuls, a block of queries at a time.

Attention written out (``SelfAttention.reference_attention``) runs ``q @ k^T`` and
``probs @ v`` as two ``flex_matmul`` calls: every (B, H, T, S) tensor — scores, probabilities,
their gradients — is materialised whole, quantised whole, and computed for the masked future
keys too. At the tiny recipe's batch (8 x 4 heads x 512 x 512) each is 32 MiB, so one layer's
forward and backward pass over about a dozen of them.

``flex_causal_attention`` computes the same flex numbers a block of ``block_size`` query rows
at a time. A block sees only the keys up to its last row's causal limit (about half the work
of the square), and backward recomputes each block's scores and probabilities from the saved
int16 ``q`` and ``k`` instead of keeping (B, H, T, S) probabilities. It is flash attention
without the online softmax: each block holds all the keys its rows see, so every row's softmax
is exact.

**The same Flexpoint semantics.** Each tensor still has one exponent, chosen by its own
Autoflex state as for the whole tensor (``AutoflexState.begin`` / ``settle`` / ``record``):
every block is quantised at the predicted exponent, the state settles once on the maximum of
the blocks' maxima, and if that moves the exponent (Algorithm 1 on first use, or the overflow
recompute) the blocks are computed again at the settled one — as ``quantize`` rounds a whole
result again. Statistics are the whole tensor's: the maximum of maxima, the sum of flush
counts, the whole tensor's element count. The written-out path quantises the scores and the
probability gradients of masked keys too, and those enter its maxima and flush counts, so the
blocks compute them for the statistics alone (masked probabilities, and so the score
gradients there, are exactly zero and need nothing).

**What differs** is float32 summation order, nothing else: a row's softmax sums fewer exact
zeros in a different vector order, ``probs @ v`` skips products with zero probabilities, and
the key and value gradients are summed block by block. Those move float32 results by an ulp or
so, which may move a flex16 value by one step where it lies on a rounding boundary (the
scores are the same dot products over D). Tests compare the two paths on values, gradients
and Autoflex states; in them outputs and query gradients come out bit-equal, and a few key
and value gradients in ten thousand one step apart.

The masked keys' statistics cost the rest of the ``q @ k^T`` and ``g @ v^T`` products (3/8 of
each at blocks of 128, T = 512): the price of keeping the written-out path's exponents.

Applies to round-to-nearest ops (stochastic rounding draws its noise per whole tensor, in the
written-out order) without dropout; ``SelfAttention`` routes other cases to the written-out
path, which stays the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from omniflex.flex.format import FlexFormat
from omniflex.flex.kernels import KernelName, QuantizeOutput, quantize_tensor, requantize_
from omniflex.flex.ops import FlexOp

__all__ = ["blocked_attention_applies", "flex_causal_attention"]

#: Query rows per block. At the tiny recipe's shapes (B 8, H 4, T = S = 512, D 64) one layer's
#: attention forward and backward ran faster in blocks of 128 than of 64 (whose Python and
#: small-matmul overheads dominate) and than written out in full.
BLOCK_SIZE = 128


def blocked_attention_applies(qk_op: FlexOp, av_op: FlexOp) -> bool:
    """Whether ``flex_causal_attention`` gives these ops the written-out path's numbers:
    round-to-nearest (stochastic noise is drawn per whole tensor), not frozen inference
    (which keeps its own fixed-exponent path), and Autoflex states on the host (the blocks
    settle a state on their maxima read back; device-resident states quantise whole tensors)."""
    return all(
        op.config.rounding == "nearest" and not op.fast and op.config.autoflex_state == "host"
        for op in (qk_op, av_op)
    )


def flex_causal_attention(
    q: torch.Tensor,  # (B, H, T, D), already scaled by 1/sqrt(D)
    k: torch.Tensor,  # (B, H, S, D)
    v: torch.Tensor,  # (B, H, S, D)
    qk_op: FlexOp,
    av_op: FlexOp,
    block_size: int = BLOCK_SIZE,
    segments: torch.Tensor | None = None,  # (B, S) integer document ids of the key positions
) -> torch.Tensor:
    """``softmax(q k^T + causal mask) v`` (B, H, T, D) with ``q @ k^T`` in ``qk_op`` and
    ``probs @ v`` in ``av_op``, as ``flex_matmul`` computes them, a block of queries at a time.

    The T queries are the last T of the S key positions: query i sees keys ``j <= S - T + i``.
    ``segments`` (packed documents) also hides every key of another document: query i sees
    key j only where ``segments[b, S - T + i] == segments[b, j]`` (a block-diagonal mask).
    """
    if q.dim() != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"flex_causal_attention needs q (B, H, T, D) and k, v (B, H, S, D), got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[2] > k.shape[2]:
        raise ValueError(f"{q.shape[2]} queries but only {k.shape[2]} keys: T must be <= S")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if segments is not None and tuple(segments.shape) != (q.shape[0], k.shape[2]):
        raise ValueError(
            f"segments must be (B, S) = ({q.shape[0]}, {k.shape[2]}), got {tuple(segments.shape)}"
        )
    qk_op.tick()
    av_op.tick()
    return _FlexCausalAttentionFn.apply(
        q.float(), k.float(), v.float(), qk_op, av_op, block_size, segments
    )


@dataclass
class _Stats:
    """Statistics of one tensor gathered over its blocks."""

    amax: float = 0.0
    flushes: int = 0

    def add(self, out: QuantizeOutput) -> None:
        # max() would drop a NaN; it must reach ``settle`` to raise its named error.
        self.amax = math.nan if math.isnan(out.amax) else max(self.amax, out.amax)
        self.flushes += out.flushes


class _Tensor:
    """One Autoflex-managed tensor quantised in blocks: its state, exponent and statistics."""

    def __init__(self, op: FlexOp, role: str, shape: tuple[int, ...]) -> None:
        self.op, self.state, self.shape = op, op.state(role), shape
        self.format: FlexFormat = self.state.format
        self.kernel: KernelName = op.config.kernel
        self.exponent = self.state.begin(op.clock)
        self.stats = _Stats()

    def quantize_(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (a contiguous block this op owns) rounded onto the grid in place, its
        statistics counted: a read-only statistics pass, then ``requantize_`` — the same
        numbers as ``quantize_tensor``'s values (tested), without a new tensor per block."""
        self.observe(x)
        return requantize_(x, self.exponent, self.format, kernel=self.kernel)

    def observe(self, x: torch.Tensor) -> None:
        """Count ``x``: a block, or a part computed only for the statistics."""
        out = quantize_tensor(
            x, self.exponent, self.format, want_mantissa=False, want_values=False,
            kernel=self.kernel,
        )  # fmt: skip
        self.stats.add(out)

    def restart(self) -> None:
        """Forget the counts of a pass over the blocks that is being done again."""
        self.stats = _Stats()

    def settle(self) -> bool:
        """Settle the exponent on the whole tensor's maximum; True if it moved, and so the
        blocks must be computed again at the new one."""
        exponent = self.state.settle(
            self.stats.amax, self.exponent, shape=self.shape, module=self.op.name
        )
        moved = exponent != self.exponent
        self.exponent = exponent
        return moved

    def record(self) -> None:
        numel = math.prod(self.shape)
        self.state.record(self.stats.amax, self.stats.flushes, self.exponent, numel)


def _take(workspace: torch.Tensor, *shape: int) -> torch.Tensor:
    """A contiguous tensor of ``shape`` on the front of a flat ``workspace``.

    Blocks are written into workspaces allocated once per call: a fresh tensor per block (a
    different size each, up to 8 MiB) is page-faulted in every time, which made the blocks'
    matmuls about twice as slow."""
    return workspace[: math.prod(shape)].view(shape)


def _future_bias(block: int, device: torch.device) -> torch.Tensor:
    """(block, block - 1): -inf where key ``j`` of a block's last ``block - 1`` keys lies after
    query row ``i`` (``j >= i``), else 0.

    A block of rows ``[r0, r1)`` sees keys ``[0, offset + r1)``; row ``r0 + i`` sees up to
    ``offset + r0 + i``, so only the last ``Tb - 1`` keys are masked, in this triangle. It is
    added, like ``layers.additive_mask`` (``x + 0`` is ``x``, ``x - inf`` is ``-inf``): an
    in-place add runs several times faster than ``masked_fill_`` with a broadcast bool mask."""
    rows = torch.arange(block, device=device).unsqueeze(1)
    cols = torch.arange(block - 1, device=device).unsqueeze(0)
    return torch.zeros(block, block - 1, device=device).masked_fill_(cols >= rows, float("-inf"))


def _mask_other_documents_(
    scores: torch.Tensor, segments: torch.Tensor | None, heads: int, rows: slice
) -> None:
    """Add -inf to a block's scores (BH, Tb, lim) where the key lies in another document than
    the query row (``segments``: (B, S); ``rows``: the block's query positions among S)."""
    if segments is None:
        return
    lim = scores.shape[-1]
    other = segments[:, rows, None] != segments[:, None, :lim]  # (B, Tb, lim)
    bias = torch.zeros(other.shape, dtype=scores.dtype, device=scores.device)
    bias.masked_fill_(other, float("-inf"))
    scores.view(-1, heads, *scores.shape[1:]).add_(bias.unsqueeze(1))


def _mask_future_(scores: torch.Tensor, bias: torch.Tensor) -> None:
    """Add ``_future_bias`` to a block's scores (BH, Tb, lim), whose last key is its last
    row's causal limit."""
    tb = scores.shape[-2]
    if tb > 1:
        scores[..., -(tb - 1) :].add_(bias[:tb, : tb - 1])


class _FlexCausalAttentionFn(torch.autograd.Function):
    # Blocks are (B*H, Tb, lim): 3-D, so every product is one bmm into a workspace or a view.
    @staticmethod
    def forward(ctx, q, k, v, qk_op: FlexOp, av_op: FlexOp, block: int, segments):  # type: ignore[override]
        B, H, T, D = q.shape
        S = k.shape[2]
        BH, offset = B * H, S - T
        q_flex, q_values = qk_op.flex_and_values("input_a", q)  # (B, H, T, D)
        # k^T quantised as the written-out path does, which also lays it out (B, H, D, S): a
        # transposed view as a matmul operand runs three times slower (5.4 vs 1.9 ms a block).
        kt_flex, k_t = qk_op.flex_and_values("input_b", k.transpose(-1, -2))  # (B, H, D, S)
        v_flex, v_values = av_op.flex_and_values("input_b", v)  # (B, H, S, D)
        q3, kt3, v3 = q_values.view(BH, T, D), k_t.view(BH, D, S), v_values.view(BH, S, D)
        quantize_scores = qk_op.config.quantize_outputs
        scores = _Tensor(qk_op, "output", (B, H, T, S)) if quantize_scores else None
        probs = _Tensor(av_op, "input_a", (B, H, T, S))
        work_s, work_p = (q3.new_empty(BH * min(block, T) * S) for _ in range(2))
        bias = _future_bias(min(block, T), q.device)

        def run() -> torch.Tensor:
            for t in (scores, probs):
                if t is not None:
                    t.restart()
            y = q3.new_empty(BH, T, D)
            for r0 in range(0, T, block):
                r1 = min(r0 + block, T)
                tb, lim = r1 - r0, offset + r1  # lim: keys any row of the block sees
                q_blk = q3[:, r0:r1]  # (BH, Tb, D)
                s = torch.bmm(q_blk, kt3[..., :lim], out=_take(work_s, BH, tb, lim))
                if scores is not None:
                    if lim < S:  # masked keys: quantised by the written-out path, so counted
                        masked = _take(work_p, BH, tb, S - lim)
                        scores.observe(torch.bmm(q_blk, kt3[..., lim:], out=masked))
                    scores.quantize_(s)
                _mask_future_(s, bias)
                _mask_other_documents_(s, segments, H, slice(offset + r0, offset + r1))
                p = torch._softmax(s, -1, False, out=_take(work_p, BH, tb, lim))
                torch.bmm(probs.quantize_(p), v3[:, :lim], out=y[:, r0:r1])
            return y.view(B, H, T, D)

        y = run()
        if scores is not None and scores.settle():
            y = run()
        if probs.settle():
            y = run()
        if scores is not None:
            scores.record()
        probs.record()
        ctx.ops, ctx.block, ctx.segments = (qk_op, av_op), block, segments
        ctx.flex = (q_flex, kt_flex, v_flex)
        ctx.exponents = (scores.exponent if scores is not None else None, probs.exponent)
        return av_op.output("output", y)

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        qk_op, av_op = ctx.ops
        block, segments = ctx.block, ctx.segments
        e_scores, e_probs = ctx.exponents
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        need_scores = need_q or need_k  # the probabilities' gradient feeds only q's and k's
        q_values, k_t, v_values = (t.to_float() for t in ctx.flex)  # k_t: (B, H, D, S)
        B, H, T, D = q_values.shape
        S = k_t.shape[3]
        BH, offset = B * H, S - T
        q3, kt3 = q_values.view(BH, T, D), k_t.view(BH, D, S)
        k3 = kt3.transpose(1, 2)  # (BH, S, D)
        vt3 = v_values.view(BH, S, D).transpose(1, 2).contiguous()  # (BH, D, S): see forward
        fmt_s, kernel_s = qk_op.config.format, qk_op.config.kernel
        fmt_p, kernel_p = av_op.config.format, av_op.config.kernel
        g3 = av_op.values("grad_output", grad_y).reshape(BH, T, D)
        grad_probs = _Tensor(av_op, "grad_a", (B, H, T, S)) if need_scores else None
        grad_scores = _Tensor(qk_op, "grad_output", (B, H, T, S)) if need_scores else None
        work_s, work_p, work_q = (q3.new_empty(BH * min(block, T) * S) for _ in range(3))
        bias = _future_bias(min(block, T), q3.device)

        def run() -> tuple[torch.Tensor | None, ...]:
            for t in (grad_probs, grad_scores):
                if t is not None:
                    t.restart()
            # k and v gradients summed transposed, (BH, D, S): q^T ds runs faster than ds^T q.
            grad_q = q3.new_empty(BH, T, D) if need_q else None
            grad_kt = kt3.new_zeros(BH, D, S) if need_k else None
            grad_vt = vt3.new_zeros(BH, D, S) if need_v else None
            for r0 in range(0, T, block):
                r1 = min(r0 + block, T)
                tb, lim = r1 - r0, offset + r1
                q_blk, g_blk = q3[:, r0:r1], g3[:, r0:r1]  # (BH, Tb, D)
                s = torch.bmm(q_blk, kt3[..., :lim], out=_take(work_s, BH, tb, lim))
                if e_scores is not None:  # forward's values again, at its settled exponent
                    requantize_(s, e_scores, fmt_s, kernel=kernel_s)
                _mask_future_(s, bias)
                _mask_other_documents_(s, segments, H, slice(offset + r0, offset + r1))
                p = torch._softmax(s, -1, False, out=_take(work_p, BH, tb, lim))  # float32
                if grad_vt is not None:
                    p_values = requantize_(
                        _take(work_q, BH, tb, lim).copy_(p), e_probs, fmt_p, kernel=kernel_p
                    )
                    grad_vt[..., :lim].baddbmm_(g_blk.transpose(1, 2), p_values)
                if grad_probs is None or grad_scores is None:
                    continue
                if lim < S:
                    masked = _take(work_q, BH, tb, S - lim)
                    grad_probs.observe(torch.bmm(g_blk, vt3[..., lim:], out=masked))
                dp = grad_probs.quantize_(
                    torch.bmm(g_blk, vt3[..., :lim], out=_take(work_s, BH, tb, lim))
                )  # fmt: skip
                ds = torch._softmax_backward_data(
                    dp, p, -1, torch.float32, grad_input=_take(work_q, BH, tb, lim)
                )
                ds = grad_scores.quantize_(ds)  # masked keys: exactly 0, nothing to count
                if grad_q is not None:
                    torch.bmm(ds, k3[:, :lim], out=grad_q[:, r0:r1])
                if grad_kt is not None:
                    grad_kt[..., :lim].baddbmm_(q_blk.transpose(1, 2), ds)
            return grad_q, grad_kt, grad_vt

        grad_q, grad_kt, grad_vt = run()
        if grad_probs is not None and grad_scores is not None:
            if grad_probs.settle():
                grad_q, grad_kt, grad_vt = run()
            if grad_scores.settle():
                grad_q, grad_kt, grad_vt = run()
            grad_probs.record()
            grad_scores.record()
        # The written-out order: av's grad_a (above) and grad_b, then qk's grad_a and grad_b.
        grad_k = grad_v = None
        if grad_vt is not None:
            grad_v = av_op.values("grad_b", grad_vt, owned=True).view(B, H, D, S).transpose(2, 3)
        if grad_q is not None:
            grad_q = qk_op.values("grad_a", grad_q, owned=True).view(B, H, T, D)
        if grad_kt is not None:
            grad_k = qk_op.values("grad_b", grad_kt, owned=True).view(B, H, D, S).transpose(2, 3)
        return grad_q, grad_k, grad_v, None, None, None, None
