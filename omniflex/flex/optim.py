"""Optimizers whose state and updates are Flexpoint: ``FlexSGD`` and ``FlexAdam``.

The paper keeps every tensor in flex, including the optimizer's: momentum (or Adam's moments)
are stored as int16 mantissas with an Autoflex-managed exponent, each weight update is
quantised with its own state before it is applied, and a ``FlexWeight`` re-quantises itself
after the update. Plain float32 parameters (master mode, or layers left unconverted) receive the
same flex update in float32.

Adam's second moment spans twice the dynamic range (in bits) of the gradient, which one shared
exponent handles badly: small-gradient entries would flush to zero and then divide by ``eps``.
``FlexAdam`` therefore stores ``sqrt(v)`` — the same information with the gradient's range.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from omniflex.flex.autoflex import AutoflexState
from omniflex.flex.config import FlexConfig
from omniflex.flex.format import FlexTensor
from omniflex.flex.weight import FlexWeight

__all__ = ["FlexAdam", "FlexRMSprop", "FlexSGD"]


class _FlexOptimizer(torch.optim.Optimizer):
    """Keeps live Autoflex states beside ``self.state`` and syncs them on save and load."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], config: FlexConfig | None):
        super().__init__(params, defaults)
        self.flex_config = config or FlexConfig()
        self._live: dict[torch.Tensor, dict[str, AutoflexState]] = {}
        self._names: dict[torch.Tensor, str] = {}
        for gi, group in enumerate(self.param_groups):
            names = group.get("param_names") or [
                f"group{gi}.param{i}" for i in range(len(group["params"]))
            ]
            for p, name in zip(group["params"], names, strict=True):
                self._names[p] = name

    def _state(self, p: torch.Tensor, role: str) -> AutoflexState:
        live = self._live.setdefault(p, {})
        st = live.get(role)
        if st is None:
            cfg = self.flex_config
            name = f"optim.{self._names.get(p, 'param')}.{role}"
            st = AutoflexState(name, cfg.format, cfg.autoflex)
            saved = self.state[p].get("autoflex", {}).get(role)
            if saved is not None:
                st.load_state_dict(saved)
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
        return FlexTensor(st[role + "_mantissa"], int(st[role + "_exponent"]), fmt).to_float()

    @staticmethod
    def _apply(p: torch.Tensor, update: torch.Tensor) -> None:
        if isinstance(p, FlexWeight):
            p.assign_(p.dequantize() + update)
        else:
            p.add_(update)

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
        return r.clamp_min(0.5 * math.ldexp(1.0, int(self.state[p][role + "_exponent"])))

    def flex_states(self) -> list[AutoflexState]:
        return [s for live in self._live.values() for s in live.values()]

    def state_dict(self) -> dict[str, Any]:
        for p, live in self._live.items():
            self.state[p]["autoflex"] = {role: s.state_dict() for role, s in live.items()}
        return super().state_dict()

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
        w = p.dequantize() if isinstance(p, FlexWeight) else p
        d = p.grad.float()
        if group["weight_decay"]:
            d = d + group["weight_decay"] * w
        if group["momentum"]:
            buf = self._load(p, "momentum")
            buf = d.clone() if buf is None else buf.mul_(group["momentum"]).add_(d)
            buf = self._store(p, "momentum", buf, step)
            d = d + group["momentum"] * buf if group["nesterov"] else buf
        self._apply(p, self._quantize(p, "update", -group["lr"] * d, step))


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
        beta1, beta2 = group["betas"]
        w = p.dequantize() if isinstance(p, FlexWeight) else p.detach()
        g = p.grad.float()
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
        self._apply(p, self._quantize(p, "update", update, step))


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
        g = p.grad.float()
        if group["weight_decay"]:
            w = p.dequantize() if isinstance(p, FlexWeight) else p.detach()
            g = g + group["weight_decay"] * w
        r = self._rms(p, "square_avg_sqrt", g, group["alpha"], step)
        update = -group["lr"] * g / (r + group["eps"])
        self._apply(p, self._quantize(p, "update", update, step))
