"""``FlexConfig``: how a model is converted to Flexpoint, with named recipes and YAML I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from omniflex.common.configs import config_from_dict, dump_yaml, load_yaml
from omniflex.flex.autoflex import AutoflexConfig, AutoflexState
from omniflex.flex.autoflex_device import AnyAutoflexState, DeviceAutoflexState
from omniflex.flex.format import FlexFormat
from omniflex.flex.kernels import KernelName

__all__ = ["RECIPES", "FlexConfig"]

WeightMode = Literal["paper", "master"]
Rounding = Literal["nearest", "stochastic"]
AutoflexResidence = Literal["host", "device"]


@dataclass(frozen=True)
class FlexConfig:
    """Everything ``convert_to_flex`` needs to know.

    Args:
        format: the number format of every flex tensor.
        autoflex: exponent-prediction hyperparameters.
        weight_mode: ``"paper"`` keeps weights only as flex mantissas + exponent (no float32
            master copy, as in the paper); ``"master"`` keeps float32 weights and quantises them
            at each use.
        rounding: rounding of activations, deltas and gradients.
        weight_rounding: rounding of weight updates in paper mode (stochastic rounding lets
            updates smaller than half a step survive on average).
        quantize_outputs: re-quantise each op's float32 result (the paper's semantics); turning
            it off leaves outputs in float32 for ablations.
        kernel: quantisation kernel (``auto`` compiles large tensors when a compiler exists,
            and device-resident Autoflex statistics at any size).
        autoflex_state: where Autoflex keeps each tensor's statistics. ``"host"``: Python
            numbers (``AutoflexState``, the reference), read back from the device at every
            quantisation. ``"device"``: small tensors beside the data
            (``DeviceAutoflexState``), nothing read back per op, the same exponents; call
            ``check_flex_step(model, optimizer)`` once a step to raise on NaN/Inf.
    """

    format: FlexFormat = field(default_factory=FlexFormat)
    autoflex: AutoflexConfig = field(default_factory=AutoflexConfig)
    weight_mode: WeightMode = "paper"
    rounding: Rounding = "nearest"
    weight_rounding: Rounding = "nearest"
    quantize_outputs: bool = True
    kernel: KernelName = "auto"
    autoflex_state: AutoflexResidence = "host"

    def __post_init__(self) -> None:
        if isinstance(self.format, str):
            object.__setattr__(self, "format", FlexFormat.from_name(self.format))
        if isinstance(self.format, dict):
            object.__setattr__(self, "format", FlexFormat(**self.format))
        if isinstance(self.autoflex, dict):
            object.__setattr__(self, "autoflex", AutoflexConfig(**self.autoflex))
        if self.weight_mode not in ("paper", "master"):
            raise ValueError(f"weight_mode must be 'paper' or 'master', got {self.weight_mode!r}")
        for name in ("rounding", "weight_rounding"):
            if getattr(self, name) not in ("nearest", "stochastic"):
                raise ValueError(
                    f"{name} must be 'nearest' or 'stochastic', got {getattr(self, name)!r}"
                )
        if self.kernel not in ("auto", "eager", "compiled"):
            raise ValueError(f"kernel must be 'auto', 'eager' or 'compiled', got {self.kernel!r}")
        if self.autoflex_state not in ("host", "device"):
            raise ValueError(
                f"autoflex_state must be 'host' or 'device', got {self.autoflex_state!r}"
            )

    def new_autoflex_state(self, name: str) -> AnyAutoflexState:
        """A fresh Autoflex state for the tensor use ``name``, kept where ``autoflex_state``
        says."""
        if self.autoflex_state == "device":
            return DeviceAutoflexState(name, self.format, self.autoflex)
        return AutoflexState(name, self.format, self.autoflex)

    @classmethod
    def from_recipe_name(cls, name: str, **overrides: Any) -> FlexConfig:
        """A named recipe (see ``RECIPES``), optionally with fields replaced."""
        if name not in RECIPES:
            raise ValueError(f"unknown flex recipe {name!r}; choose one of {sorted(RECIPES)}")
        return replace(RECIPES[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = self.format.to_dict()
        return data

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML text; also written to ``path`` when given."""
        return dump_yaml(self.to_dict(), path)

    @classmethod
    def from_yaml(cls, source: str | Path) -> FlexConfig:
        """Load from a YAML file path or a YAML string."""
        return config_from_dict(cls, load_yaml(source), source="flex config YAML")


RECIPES: dict[str, FlexConfig] = {
    # The paper: flex16+5 everywhere, weights only as flex16, Autoflex defaults.
    "flex16+5": FlexConfig(),
    # float32 master weights; everything else flex16+5.
    "flex16+5-master": FlexConfig(weight_mode="master"),
    # Narrower mantissas, to show where the format breaks.
    "flex12+5": FlexConfig(format=FlexFormat(12, 5), weight_rounding="stochastic"),
    "flex8+5": FlexConfig(format=FlexFormat(8, 5), weight_rounding="stochastic"),
}
