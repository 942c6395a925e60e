"""``KVCache``: keys and values of past positions, for incremental decoding.

The model writes each layer's new keys and values at the cache's current ``length`` and reads
back everything up to it, so a forward over T new tokens costs O(T·S), not O(S²). Any chunk
length may be appended — a whole prompt, a few audio tokens as they arrive from the microphone
(incremental prefill: little is left to compute when the user stops speaking), or one sampled
token — and ``truncate(n)`` rolls back to position ``n`` (barge-in: drop the unspoken rest of an
answer and continue from where the user interrupted).

Two storages:

* ``"float32"``: plain tensors; decoding equals a full recompute up to float rounding.
* ``"flex16"``: Flexpoint storage — int16 mantissas and one shared exponent per *block*, where
  a block is the keys (or values) of one position of one sequence in one layer (all heads:
  ``n_kv_heads * head_dim`` values). Each block gets the smallest exponent that holds its
  largest magnitude (``omniflex.flex.serialize.exact_exponent``, vectorised), so nothing
  saturates, and because a block is written once, appending never rescales earlier entries and
  needs no host synchronisation. Bytes: ``2 * Hkv * D + 1`` per block against ``4 * Hkv * D``,
  i.e. at most 0.51x of float32 for ``Hkv * D >= 64``. The relative rounding error of an entry
  is at most ``2**-15`` of its block's largest magnitude.

Shapes: L layers, B batch, Hkv key/value heads, S positions, D head size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

from omniflex.flex import FlexFormat

if TYPE_CHECKING:
    from omniflex.model.transformer import OmniModel

__all__ = ["CacheStorage", "KVCache", "flex16_decode", "flex16_encode", "flex16_round"]

CacheStorage = Literal["float32", "flex16"]


def flex16_encode(
    x: torch.Tensor, fmt: FlexFormat, reduce_dims: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise float ``x`` with one exponent per slice over ``reduce_dims``.

    Returns the int16 mantissas (shape of ``x``) and int8 exponents (``x`` without
    ``reduce_dims``): the smallest exponents whose range holds each slice's largest magnitude.
    """
    mantissa, exponent = flex16_round(x, fmt, reduce_dims)
    return mantissa.to(fmt.storage_dtype), exponent.to(torch.int8).squeeze(reduce_dims)


def flex16_round(
    x: torch.Tensor, fmt: FlexFormat, reduce_dims: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``flex16_encode`` before the casts: the mantissas as integer-valued float32 and the
    exponents (keeping ``reduce_dims`` as size 1) as int32, so that ``mantissa *
    torch.exp2(exponent)`` is the decoded value without a round trip through int16."""
    x = x.float()
    amax = x.abs().amax(dim=reduce_dims, keepdim=True)
    # exponent = ceil(log2(amax / max_mantissa)), exactly: frexp gives amax/M = m * 2**e with
    # m in [0.5, 1); an exact power of two (m == 0.5) needs one less.
    frac, exp = torch.frexp(amax / fmt.max_mantissa)
    exponent = exp - (frac == 0.5).to(exp.dtype)
    exponent = torch.where(amax > 0, exponent, torch.full_like(exponent, fmt.min_exponent))
    exponent = exponent.clamp_(fmt.min_exponent, fmt.max_exponent)
    inv_scale = torch.exp2(-exponent.float())
    mantissa = torch.round(x * inv_scale).clamp_(-fmt.max_mantissa, fmt.max_mantissa)
    return mantissa, exponent


def flex16_decode(mantissa: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """Exact float32 values of mantissas with broadcastable per-block ``exponent``."""
    # A copy (float mantissas too), scaled in place: one buffer, not two.
    return mantissa.to(torch.float32, copy=True).mul_(torch.exp2(exponent.float()))


class KVCache:
    """Keys and values of the positions a model has seen, for all layers.

    Args:
        n_layers, n_kv_heads, head_dim: the model's attention shape.
        max_len: capacity in positions (allocated up front).
        batch_size: sequences decoded together.
        storage: ``"float32"`` or ``"flex16"`` (see the module docstring).
        device: where the storage lives.

    Protocol (driven by ``OmniModel.forward``): every layer calls ``update(layer, k, v)`` with
    the same number T of new positions, then the model calls ``advance(T)``. An exception in
    between leaves ``length`` unchanged, so a failed forward never half-appends. A compiled
    forward (``omniflex.model.compiled``) reads ``past_values()`` and writes every layer's new
    entries at once with ``append_layers``.
    """

    #: The flex16 storage format: int16 mantissas, exponents in the 5-bit range.
    FORMAT = FlexFormat(16, 5)

    def __init__(
        self,
        n_layers: int,
        n_kv_heads: int,
        head_dim: int,
        max_len: int,
        *,
        batch_size: int = 1,
        storage: CacheStorage = "float32",
        device: torch.device | str | None = None,
    ) -> None:
        for name, value in (
            ("n_layers", n_layers), ("n_kv_heads", n_kv_heads), ("head_dim", head_dim),
            ("max_len", max_len), ("batch_size", batch_size),
        ):  # fmt: skip
            if value < 1:
                raise ValueError(f"KVCache {name} must be >= 1, got {value}")
        if storage not in ("float32", "flex16"):
            raise ValueError(f"KVCache storage must be 'float32' or 'flex16', got {storage!r}")
        self.n_layers, self.n_kv_heads, self.head_dim = n_layers, n_kv_heads, head_dim
        self.max_len, self.batch_size, self.storage = max_len, batch_size, storage
        self.format = self.FORMAT
        self.length = 0
        self._pending = 0  # positions written by update() but not yet advance()d
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        if storage == "float32":
            self.k = torch.zeros(shape, dtype=torch.float32, device=device)
            self.v = torch.zeros(shape, dtype=torch.float32, device=device)
        else:
            self.k = torch.zeros(shape, dtype=self.format.storage_dtype, device=device)
            self.v = torch.zeros(shape, dtype=self.format.storage_dtype, device=device)
            exp_shape = (n_layers, batch_size, max_len)
            self.k_exponent = torch.zeros(exp_shape, dtype=torch.int8, device=device)
            self.v_exponent = torch.zeros(exp_shape, dtype=torch.int8, device=device)

    @classmethod
    def for_model(
        cls,
        model: OmniModel,
        *,
        batch_size: int = 1,
        storage: CacheStorage = "float32",
        max_len: int | None = None,
    ) -> KVCache:
        """A cache shaped for ``model`` (capacity ``max_len``, default its ``max_seq_len``)."""
        cfg = model.config
        device = next(model.buffers()).device
        return cls(
            cfg.n_layers, cfg.kv_heads, cfg.head_dim, max_len or cfg.max_seq_len,
            batch_size=batch_size, storage=storage, device=device,
        )  # fmt: skip

    # ------------------------------------------------------------------ protocol
    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k``, ``v`` (B, Hkv, T, D) after the cached positions of ``layer``; return all
        keys and values (B, Hkv, length + T, D) as float32."""
        B, Hkv, T, D = k.shape
        if (B, Hkv, D) != (self.batch_size, self.n_kv_heads, self.head_dim):
            raise ValueError(
                f"KVCache holds (batch {self.batch_size}, {self.n_kv_heads} heads, head size "
                f"{self.head_dim}); layer {layer} gave {B}, {Hkv}, {D}. Build the cache with "
                "KVCache.for_model(model, batch_size=...)"
            )
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} is outside the cache's {self.n_layers} layers")
        if layer == 0:
            self._pending = T
        elif self._pending != T:
            raise ValueError(f"layer {layer} wrote {T} positions, layer 0 wrote {self._pending}")
        start, end = self.length, self.length + T
        if end > self.max_len:
            raise ValueError(
                f"KVCache is full: {self.length} cached + {T} new positions > max_len "
                f"{self.max_len}; truncate() it or build a larger one"
            )
        if self.storage == "float32":
            self.k[layer, :, :, start:end] = k
            self.v[layer, :, :, start:end] = v
            return self.k[layer, :, :, :end], self.v[layer, :, :, :end]
        k_m, k_e = flex16_encode(k, self.format, reduce_dims=(1, 3))  # (B,Hkv,T,D), (B,T)
        v_m, v_e = flex16_encode(v, self.format, reduce_dims=(1, 3))
        self.k[layer, :, :, start:end] = k_m
        self.v[layer, :, :, start:end] = v_m
        self.k_exponent[layer, :, start:end] = k_e
        self.v_exponent[layer, :, start:end] = v_e
        k_all = flex16_decode(
            self.k[layer, :, :, :end], self.k_exponent[layer, :, None, :end, None]
        )
        v_all = flex16_decode(
            self.v[layer, :, :, :end], self.v_exponent[layer, :, None, :end, None]
        )
        return k_all, v_all

    def past_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 keys and values (L, B, Hkv, length, D) of the cached positions of all layers:
        views of a float32 cache, the exact decoded values of a flex16 one."""
        n = self.length
        k, v = self.k[:, :, :, :n], self.v[:, :, :, :n]
        if self.storage == "float32":
            return k, v
        return (
            flex16_decode(k, self.k_exponent[:, :, None, :n, None]),
            flex16_decode(v, self.v_exponent[:, :, None, :n, None]),
        )

    def append_layers(
        self,
        k: torch.Tensor,
        v: torch.Tensor,
        k_exponent: torch.Tensor | None = None,
        v_exponent: torch.Tensor | None = None,
    ) -> None:
        """Append T positions to every layer at once: ``k``, ``v`` (L, B, Hkv, T, D) in the
        storage's own form — float32, or flex16 mantissas (int16, or the integer-valued float32
        of ``flex16_round``) with exponents ``k_exponent``/``v_exponent`` (L, B, T)."""
        T = k.shape[3]
        expected = (self.n_layers, self.batch_size, self.n_kv_heads, T, self.head_dim)
        if tuple(k.shape) != expected or tuple(v.shape) != expected:
            raise ValueError(
                f"append_layers needs keys and values of shape {expected}, got "
                f"{tuple(k.shape)} and {tuple(v.shape)}"
            )
        allowed = {self.k.dtype} if self.storage == "float32" else {self.k.dtype, torch.float32}
        if k.dtype not in allowed or v.dtype not in allowed:
            raise ValueError(
                f"a {self.storage} cache takes {sorted(map(str, allowed))} keys and values, "
                f"got {k.dtype} and {v.dtype}"
            )
        flex = self.storage == "flex16"
        if flex != (k_exponent is not None and v_exponent is not None):
            raise ValueError("exponents go with a flex16 cache, and only with it")
        if self._pending:
            raise ValueError("append_layers during a forward that is writing layer by layer")
        start, end = self.length, self.length + T
        if end > self.max_len:
            raise ValueError(
                f"KVCache is full: {self.length} cached + {T} new positions > max_len "
                f"{self.max_len}; truncate() it or build a larger one"
            )
        self.k[:, :, :, start:end] = k
        self.v[:, :, :, start:end] = v
        if flex:
            self.k_exponent[:, :, start:end] = k_exponent
            self.v_exponent[:, :, start:end] = v_exponent
        self.length = end

    def advance(self, n: int) -> None:
        """Count ``n`` newly written positions as cached (called once per model forward)."""
        if n != self._pending:
            raise ValueError(f"advance({n}) after layers wrote {self._pending} positions")
        self.length += n
        self._pending = 0

    # ------------------------------------------------------------------ rollback
    def truncate(self, n: int) -> None:
        """Forget every position from ``n`` on (``0 <= n <= length``)."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot truncate the KV cache to {n}: it holds {self.length}")
        self.length = n
        self._pending = 0

    def reset(self) -> None:
        """Forget everything (the storage is kept for reuse)."""
        self.truncate(0)

    # ------------------------------------------------------------------ accounting
    @property
    def nbytes(self) -> int:
        """Bytes of the allocated storage (mantissas and exponents for flex16)."""
        tensors = [self.k, self.v]
        if self.storage == "flex16":
            tensors += [self.k_exponent, self.v_exponent]
        return sum(t.numel() * t.element_size() for t in tensors)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (
            f"KVCache({self.storage}, length={self.length}/{self.max_len}, "
            f"layers={self.n_layers}, batch={self.batch_size}, kv_heads={self.n_kv_heads}, "
            f"head_dim={self.head_dim}, {self.nbytes / 2**20:.2f} MiB)"
        )
