"""Optimizers whose state and updates are Flexpoint: ``FlexSGD`` and ``FlexAdam``.

The paper keeps every tensor in flex, including the optimizer's: momentum (or Adam's moments)
are stored as int16 mantissas with an Autoflex-managed exponent, each weight update is
quantised with its own state before it is applied, and a ``FlexWeight`` re-quantises itself
after the update. Plain float32 parameters (master mode, or layers left unconverted) receive the
same flex update in float32.

Adam's second moment spans twice the dynamic range (in bits) of the gradient, which one shared
exponent handles badly: small-gradient entries would flush to zero and then divide by ``eps``.
``FlexAdam`` therefore stores ``sqrt(v)`` — the same information with the gradient's range.

``FlexAdam``'s step on a large tensor (where ``FlexConfig.kernel`` compiles) runs fused: see
``_adam_core``. Everything else, and every first step, takes the reference path, op by op.

With device-resident Autoflex states (``FlexConfig.autoflex_state="device"``) the stored
exponents are 0-d device tensors and every step takes the reference path (the fused step
settles its states on maxima read back); ``state_dict`` saves them as ints, as the host
states do, so either kind of optimizer loads the other's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.distributed.tensor import DTensor

from omniflex.flex.autoflex_device import AnyAutoflexState
from omniflex.flex.config import FlexConfig
from omniflex.flex.format import FlexTensor, exact_pow2
from omniflex.flex.kernels import _quantize_core_packed, compile_variant, resolve_kernel
from omniflex.flex.sharding import local_tensor, shard_max_of
from omniflex.flex.weight import FlexWeight

__all__ = ["FlexAdam", "FlexRMSprop", "FlexSGD"]


class _FlexOptimizer(torch.optim.Optimizer):
    """Keeps live Autoflex states beside ``self.state`` and syncs them on save and load."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], config: FlexConfig | None):
        super().__init__(params, defaults)
        self.flex_config = config or FlexConfig()
        self._live: dict[torch.Tensor, dict[str, AnyAutoflexState]] = {}
        self._names: dict[torch.Tensor, str] = {}
        for gi, group in enumerate(self.param_groups):
            names = group.get("param_names") or [
                f"group{gi}.param{i}" for i in range(len(group["params"]))
            ]
            for p, name in zip(group["params"], names, strict=True):
                self._names[p] = name

    def _state(self, p: torch.Tensor, role: str) -> AnyAutoflexState:
        live = self._live.setdefault(p, {})
        st = live.get(role)
        if st is None:
            name = f"optim.{self._names.get(p, 'param')}.{role}"
            st = self.flex_config.new_autoflex_state(name)
            saved = self.state[p].get("autoflex", {}).get(role)
            if saved is not None:
                st.load_state_dict(saved)
            st.amax_reduce = shard_max_of(p)  # FSDP: one exponent over every shard
            live[role] = st
        return st

    def _quantize(self, p: torch.Tensor, role: str, x: torch.Tensor, step: int) -> torch.Tensor:
        stochastic = self.flex_config.weight_rounding == "stochastic" and role == "update"
        out = self._state(p, role).quantize(
            x, want_mantissa=False, want_values=True, stochastic=stochastic,
            kernel=self.flex_config.kernel, clock=step,
        )  # fmt: skip
        return out.values  # type: ignore[return-value]

    def _store(self, p: torch.Tensor, role: str, x: torch.Tensor, step: int) -> torch.Tensor:
        """Keep ``x`` as flex state; returns its flex value (what a later ``_load`` gives)."""
        out = self._state(p, role).quantize(
            x, want_mantissa=True, want_values=True, kernel=self.flex_config.kernel, clock=step
        )
        self.state[p][role + "_mantissa"] = out.mantissa
        self.state[p][role + "_exponent"] = out.exponent
        return out.values  # type: ignore[return-value]

    def _load(self, p: torch.Tensor, role: str) -> torch.Tensor | None:
        st = self.state[p]
        if role + "_mantissa" not in st:
            return None
        fmt = self.flex_config.format
        exponent = st[role + "_exponent"]
        if not isinstance(exponent, torch.Tensor):
            exponent = int(exponent)
        return FlexTensor(st[role + "_mantissa"], exponent, fmt).to_float()

    @staticmethod
    def _local(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The part of ``p`` and of its gradient that this rank updates: all of them, or the
        local shards of a parameter FSDP2 shards (a ``DTensor``; see ``omniflex.flex.sharding``).
        """
        return local_tensor(p), local_tensor(p.grad)

    @staticmethod
    def _apply(p: torch.Tensor, update: torch.Tensor) -> None:
        if isinstance(p, FlexWeight):
            p.assign_(p.dequantize() + update)
        else:
            p.add_(update)

    @torch.compiler.disable(reason="FlexWeight is no traceable tensor subclass")
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
                self._update(p, group, state["step"])
        return loss

    def _update(self, p: torch.Tensor, group: dict[str, Any], step: int) -> None:
        raise NotImplementedError

    def _rms(
        self, p: torch.Tensor, role: str, g: torch.Tensor, decay: float, step: int
    ) -> torch.Tensor:
        """Update and return ``sqrt(EMA(g**2))``, stored as a flex tensor (see module docstring)."""
        r = self._load(p, role)
        v = (
            (1 - decay) * g * g
            if r is None
            else (r * r).mul_(decay).addcmul_(g, g, value=1 - decay)
        )
        r = self._store(p, role, v.sqrt_(), step)
        # An entry under half a mantissa step of the stored exponent reads 0 while the first
        # moment (stored with its own, finer exponent) may not: m / eps would explode. Floor the
        # root at the storage's resolution, the smallest value it could have held.
        exponent = self.state[p][role + "_exponent"]
        if isinstance(exponent, torch.Tensor):  # device-resident: 0.5 * 2**e, exact, no read
            return r.clamp_min(0.5 * exact_pow2(exponent))
        return r.clamp_min(0.5 * math.ldexp(1.0, int(exponent)))

    def flex_states(self) -> list[AnyAutoflexState]:
        return [s for live in self._live.values() for s in live.values()]

    def state_dict(self) -> dict[str, Any]:
        for p, live in self._live.items():
            self.state[p]["autoflex"] = {role: s.state_dict() for role, s in live.items()}
        saved = super().state_dict()
        # Device-resident exponents are saved as the host states save theirs: Python ints.
        saved["state"] = {
            index: {
                key: int(v) if key.endswith("_exponent") and isinstance(v, torch.Tensor) else v
                for key, v in per_param.items()
            }
            for index, per_param in saved["state"].items()
        }
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # torch.optim casts every state tensor to the parameter's float dtype; int16 -> float32
        # -> int16 is lossless, so cast the mantissas back.
        storage = self.flex_config.format.storage_dtype
        for st in self.state.values():
            for key, value in st.items():
                if key.endswith("_mantissa") and isinstance(value, torch.Tensor):
                    st[key] = value.to(storage)
        self._live.clear()  # rebuilt lazily from self.state[p]["autoflex"]


class FlexSGD(_FlexOptimizer):
    """SGD with momentum; momentum buffer and updates in Flexpoint."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        config: FlexConfig | None = None,
    ) -> None:
        if lr <= 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"FlexSGD needs lr > 0, momentum >= 0, weight_decay >= 0; got lr={lr}, "
                f"momentum={momentum}, weight_decay={weight_decay}"
            )
        if nesterov and momentum == 0:
            raise ValueError("FlexSGD: nesterov=True needs momentum > 0")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
        }
        super().__init__(params, defaults, config)

    def _update(self, p: torch.Tensor, group: dict[str, Any], step: int) -> None:
        param, grad = self._local(p)
        w = param.dequantize() if isinstance(param, FlexWeight) else param
        d = grad.float()
        if group["weight_decay"]:
            d = d + group["weight_decay"] * w
        if group["momentum"]:
            buf = self._load(p, "momentum")
            buf = d.clone() if buf is None else buf.mul_(group["momentum"]).add_(d)
            buf = self._store(p, "momentum", buf, step)
            d = d + group["momentum"] * buf if group["nesterov"] else buf
        self._apply(param, self._quantize(p, "update", -group["lr"] * d, step))


class FlexAdam(_FlexOptimizer):
    """Adam / AdamW (``decoupled=True``) with both moments and updates in Flexpoint."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = True,
        config: FlexConfig | None = None,
    ) -> None:
        if lr <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or eps <= 0:
            raise ValueError(
                f"FlexAdam needs lr > 0, betas in [0, 1), eps > 0; got lr={lr}, betas={betas}, "
                f"eps={eps}"
            )
        defaults = {
            "lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "decoupled": decoupled,
        }  # fmt: skip
        super().__init__(params, defaults, config)

    def _update(self, p: torch.Tensor, group: dict[str, Any], step: int) -> None:
        if self._fuses(p):
            self._update_fused(p, group, step)
        else:
            self._update_reference(p, group, step)

    def _update_reference(self, p: torch.Tensor, group: dict[str, Any], step: int) -> None:
        """The definition, op by op (and every first step: it initialises the moments)."""
        beta1, beta2 = group["betas"]
        param, grad = self._local(p)
        w = param.dequantize() if isinstance(param, FlexWeight) else param.detach()
        g = grad.float()
        if group["weight_decay"] and not group["decoupled"]:
            g = g + group["weight_decay"] * w
        m = self._load(p, "exp_avg")
        m = (1 - beta1) * g if m is None else m.mul_(beta1).add_(g, alpha=1 - beta1)
        m = self._store(p, "exp_avg", m, step)
        r = self._rms(p, "exp_avg_sqrt", g, beta2, step)
        bc1 = 1 - beta1**step
        bc2_sqrt = math.sqrt(1 - beta2**step)
        update = -(group["lr"] / bc1) * m / (r / bc2_sqrt + group["eps"])
        if group["weight_decay"] and group["decoupled"]:
            update = update - group["lr"] * group["weight_decay"] * w
        self._apply(param, self._quantize(p, "update", update, step))

    def _fuses(self, p: torch.Tensor) -> bool:
        """Whether ``p``'s step runs fused: moments already stored, a compiled kernel for its
        size, int16 storage (packed pairs, an even count), round-to-nearest throughout
        (stochastic noise would be drawn in another order than the reference draws it),
        host Autoflex states, and the whole parameter on this rank (not an FSDP shard)."""
        cfg = self.flex_config
        if isinstance(p, DTensor):  # a shard settles on every shard's maxima: op by op
            return False
        if "exp_avg_sqrt_mantissa" not in self.state[p] or cfg.weight_rounding != "nearest":
            return False
        if cfg.autoflex_state != "host":  # it settles its states on maxima read back
            return False
        if cfg.format.storage_dtype != torch.int16 or p.numel() % 2 or p.numel() >= 2**31:
            return False
        if p.grad.is_sparse or resolve_kernel(cfg.kernel, p) != "compiled":
            return False
        if isinstance(p, FlexWeight):
            return p.state.format.storage_dtype == torch.int16 and not p.stochastic
        return p.dtype == torch.float32

    def _update_fused(self, p: torch.Tensor, group: dict[str, Any], step: int) -> None:
        """``_update_reference``'s numbers and Autoflex statistics from one ``_adam_core`` pass.

        The kernel quantises the moments, the update and the new weight at the exponents
        their states predict; each state then settles on its maximum, in the reference's order,
        and the kernel runs again only if an exponent moved (rare once the histories fill)."""
        beta1, beta2 = group["betas"]
        lr, decay = group["lr"], group["weight_decay"]
        flex_weight = isinstance(p, FlexWeight)
        g = p.grad.float()
        if decay and not group["decoupled"]:
            g = g + decay * (p.dequantize() if flex_weight else p.detach())
        # Eager on purpose, as the reference computes them: on CPU, add_ with alpha and
        # addcmul_ are fused multiply-adds, which inductor does not emit, and eager sqrt is
        # Sleef's (within 0.5001 ulp), not inductor's correctly rounded one; compiled, each
        # differs from the reference in ~1% of the values.
        m = self._load(p, "exp_avg").mul_(beta1).add_(g, alpha=1 - beta1)  # type: ignore[union-attr]
        r = self._load(p, "exp_avg_sqrt")
        r = (r * r).mul_(beta2).addcmul_(g, g, value=1 - beta2).sqrt_()  # type: ignore[operator]
        state = self.state[p]
        roles = ["exp_avg", "exp_avg_sqrt", "update"]
        states = [self._state(p, role) for role in roles]
        clocks: list[int | None] = [step, step, step]
        if flex_weight:
            states.append(p.state)
            clocks.append(None)  # FlexWeight.assign_ quantises without a clock
        exponents = [st.exponent for st in states]  # what each ``begin`` will predict
        decoupled = bool(decay and group["decoupled"])
        core = _compiled_adam_core((flex_weight, decoupled))
        # int16 loads keep inductor's CPU loop scalar (3.5x slower); the conversion, exact, runs
        # eager.
        w_in = p.mantissa.float() if flex_weight else p.detach()
        largest = [
            self.flex_config.format.max_mantissa,
            p.state.format.max_mantissa if flex_weight else 0,
        ]
        fixed = [
            -(lr / (1 - beta1**step)),
            math.sqrt(1 - beta2**step),
            group["eps"],
            lr * decay,
            math.ldexp(1.0, p.exponent) if flex_weight else 1.0,
        ]

        def run() -> tuple[list[torch.Tensor], list[float]]:
            scales = [math.ldexp(1.0, e) for e in exponents[:3]]
            inverses = [math.ldexp(1.0, -e) for e in exponents] + [1.0] * (4 - len(exponents))
            hyper = torch.tensor(fixed + scales + inverses + largest, device=p.device)
            *outs, stats = core(
                m.reshape(-1), r.reshape(-1), w_in.reshape(-1), hyper, flex_weight, decoupled,
            )  # fmt: skip
            return outs, stats.tolist()

        outs, stats = run()
        for i, st in enumerate(states):
            st.begin(clocks[i])
            settled = st.settle(stats[2 * i], exponents[i], shape=tuple(p.shape))
            if settled != exponents[i]:
                exponents[i] = settled
                outs, stats = run()
            st.record(stats[2 * i], int(stats[2 * i + 1]), settled, p.numel())
        m_packed, r_packed, w_out = outs
        state["exp_avg_mantissa"] = m_packed.view(torch.int16).view(p.shape)
        state["exp_avg_exponent"] = exponents[0]
        state["exp_avg_sqrt_mantissa"] = r_packed.view(torch.int16).view(p.shape)
        state["exp_avg_sqrt_exponent"] = exponents[1]
        if flex_weight:
            p.load_flex_(w_out.view(torch.int16).view(p.shape), exponents[3])
        else:
            p.add_(w_out.view(p.shape))


class FlexRMSprop(_FlexOptimizer):
    """RMSprop (the original WGAN's optimizer) with ``sqrt`` of the square average and the
    updates in Flexpoint."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        config: FlexConfig | None = None,
    ) -> None:
        if lr <= 0 or not 0 <= alpha < 1 or eps <= 0:
            raise ValueError(
                f"FlexRMSprop needs lr > 0, alpha in [0, 1), eps > 0; got lr={lr}, alpha={alpha}, "
                f"eps={eps}"
            )
        defaults = {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults, config)

    def _update(self, p: torch.Tensor, group: dict[str, Any], step: int) -> None:
        param, grad = self._local(p)
        g = grad.float()
        if group["weight_decay"]:
            w = param.dequantize() if isinstance(param, FlexWeight) else param.detach()
            g = g + group["weight_decay"] * w
        r = self._rms(p, "square_avg_sqrt", g, group["alpha"], step)
        update = -group["lr"] * g / (r + group["eps"])
        self._apply(param, self._quantize(p, "update", update, step))


def _adam_core(
    m: torch.Tensor,  # (n,) float32, m_{t-1} * beta1 + (1 - beta1) * g, not yet quantised
    r: torch.Tensor,  # (n,) float32, sqrt(r_{t-1}**2 * beta2 + (1 - beta2) * g**2), unquantised
    w: torch.Tensor,  # (n,) FlexWeight mantissas as float32, else the float32 parameter
    hyper: torch.Tensor,  # (14,) float32, see below
    flex_weight: bool,
    decoupled: bool,
) -> tuple[torch.Tensor, ...]:
    """``FlexAdam._update_reference`` from the moments on, in one pass.

    The reference spends ~35 passes on a tensor (dequantise, quantise, clamp, divide, each
    into a fresh tensor); this pass reads the two moments and the weight once and writes three
    int16 tensors (the moments' own updates stay eager: see ``FlexAdam._update_fused``). It runs the
    reference's float32 operations in the reference's order (the compiler is told not to
    contract them into fused multiply-adds), so every bit agrees; ``tests/flex/test_optim.py``
    checks that against the reference path. Quantisation is
    ``kernels._quantize_core_packed`` itself, at exponents given in ``hyper``: (-lr/bc1, sqrt(bc2),
    eps, lr * weight_decay, w_scale_old, the scales of m, sqrt(v) and the update, then the
    inverse scales of those and of the new weight, the formats' largest mantissas: as data,
    not Python ints, which the compiler keeps symbolic and then leaves the loop unvectorised).

    Returns packed int16 mantissas of m and sqrt(v), then those of the new weight (FlexWeight)
    or the quantised update (float32 parameter), and float64 (8,) statistics: max |x| and
    flushes of m, sqrt(v), the update and the new weight.
    """
    step_size, bc2_sqrt, eps, lr_decay, w_scale_old = (hyper[i] for i in range(5))
    m_scale, r_scale, u_scale, m_inv, r_inv, u_inv, w_inv = (hyper[i] for i in range(5, 12))
    max_mantissa, max_mantissa_w = hyper[12], hyper[13]
    m_packed, m_values, m_stats = _quantize(m, m_inv, m_scale, max_mantissa)
    r_packed, r_values, r_stats = _quantize(r, r_inv, r_scale, max_mantissa)
    # _rms's floor: the root at the storage's resolution (half a step)
    r_floored = torch.clamp_min(r_values, 0.5 * r_scale)
    update = step_size * m_values / (r_floored / bc2_sqrt + eps)
    w_old = w * w_scale_old if flex_weight else w
    if decoupled:
        update = update - lr_decay * w_old
    _, u_values, u_stats = _quantize(update, u_inv, u_scale, max_mantissa, want_mantissa=False)
    if flex_weight:
        out, _, w_stats = _quantize(w_old + u_values, w_inv, 1.0, max_mantissa_w, want_values=False)
    else:
        out, w_stats = u_values, torch.zeros(2, dtype=torch.float64)
    return m_packed, r_packed, out, torch.cat([m_stats, r_stats, u_stats, w_stats])


def _quantize(
    x: torch.Tensor,
    inv_scale: torch.Tensor,
    scale: torch.Tensor | float,
    max_mantissa: torch.Tensor,
    *,
    want_mantissa: bool = True,
    want_values: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """``kernels._quantize_core_packed`` (round to nearest, int16 mantissas as packed pairs):
    the quantiser every flex kernel uses, traced into ``_adam_core``'s graph."""
    return _quantize_core_packed(
        x, inv_scale, scale, None, max_mantissa, torch.int16, want_mantissa, want_values
    )  # type: ignore[arg-type]


@functools.cache
def _compiled_adam_core(variant: tuple[bool, bool]) -> Callable[..., Any]:
    """One compiled ``_adam_core`` per (flex_weight, decoupled weight decay)."""
    return compile_variant(_adam_core, variant)
