"""Flexpoint (flex16+5) training for any PyTorch model.

Quick start::

    from omniflex.flex import FlexConfig, FlexSGD, convert_to_flex, flex_disabled

    model = convert_to_flex(model, config=FlexConfig.from_recipe_name("flex16+5"))
    opt = FlexSGD(model.parameters(), lr=0.1, momentum=0.9)   # build after converting
    ...
    with flex_disabled(model):                               # float32 evaluation
        evaluate(model)

Under ``torchrun``, ``fully_shard_flex(model, blocks=model.blocks)`` shards it with FSDP2 (flex
weights all-gathered as int16 mantissas, one exponent per weight); build the optimizer after.
"""

from omniflex.flex.autoflex import AutoflexConfig, AutoflexState
from omniflex.flex.autoflex_device import DeviceAutoflexState
from omniflex.flex.config import RECIPES, FlexConfig
from omniflex.flex.convert import (
    check_flex_step,
    convert_to_flex,
    flex_disabled,
    flex_frozen,
    flex_modules,
    flex_states,
    set_flex_frozen,
)
from omniflex.flex.emulate import LowPrecisionOptimizer, convert_to_float_emulation, round_to
from omniflex.flex.errors import (
    FlexConversionError,
    FlexError,
    FlexNonFiniteError,
    FlexTypeError,
)
from omniflex.flex.format import FlexFormat, FlexTensor
from omniflex.flex.kernels import QuantizeOutput, quantize_reference, quantize_tensor
from omniflex.flex.matmul import Matmul
from omniflex.flex.modules import FlexConv2d, FlexEmbedding, FlexLinear, FlexMatmul, FlexModule
from omniflex.flex.ops import (
    FlexOp,
    flex_bmm,
    flex_conv2d,
    flex_embedding,
    flex_linear,
    flex_matmul,
)
from omniflex.flex.optim import FlexAdam, FlexRMSprop, FlexSGD
from omniflex.flex.sharding import FlexAllGather, fully_shard_flex
from omniflex.flex.syncs import HostSyncCounter, count_host_syncs
from omniflex.flex.telemetry import FlexTelemetry, plot_telemetry, read_telemetry
from omniflex.flex.weight import FlexWeight

__all__ = [
    "RECIPES",
    "AutoflexConfig",
    "AutoflexState",
    "DeviceAutoflexState",
    "FlexAdam",
    "FlexAllGather",
    "FlexConfig",
    "FlexConv2d",
    "FlexConversionError",
    "FlexEmbedding",
    "FlexError",
    "FlexFormat",
    "FlexLinear",
    "FlexMatmul",
    "FlexModule",
    "FlexNonFiniteError",
    "FlexOp",
    "FlexRMSprop",
    "FlexSGD",
    "FlexTelemetry",
    "FlexTensor",
    "FlexTypeError",
    "FlexWeight",
    "HostSyncCounter",
    "LowPrecisionOptimizer",
    "Matmul",
    "QuantizeOutput",
    "check_flex_step",
    "convert_to_flex",
    "convert_to_float_emulation",
    "count_host_syncs",
    "flex_bmm",
    "flex_conv2d",
    "flex_disabled",
    "flex_embedding",
    "flex_frozen",
    "flex_linear",
    "flex_matmul",
    "flex_modules",
    "flex_states",
    "fully_shard_flex",
    "plot_telemetry",
    "quantize_reference",
    "quantize_tensor",
    "read_telemetry",
    "round_to",
    "set_flex_frozen",
]
