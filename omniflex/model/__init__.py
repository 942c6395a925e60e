"""The omni transformer: vocabulary layout, config, network, KV cache, sampling, generation.

Quick start::

    from omniflex.model import Generator, ModelConfig, OmniModel, SamplingConfig, VocabLayout

    layout = VocabLayout(text_size=4096, image_size=1000, audio_size=1000, audio_codebooks=2)
    model = OmniModel.build(ModelConfig.from_name("tiny", vocab=layout), seed=0)  # flex16+5
    out = model(ids, targets, loss_mask)                     # out.logits (B, T, V), out.loss
    gen = Generator(model, layout, cache_storage="flex16")
    for event in gen.stream(prompt, max_new_tokens=64, sampling=SamplingConfig(seed=0)):
        ...                                                  # event.token_id, event.modality
"""

from omniflex.model.chat import (
    ChatFormatError,
    ChatTemplate,
    DecodedConversation,
    EncodedConversation,
    Span,
    canonical,
)
from omniflex.model.compiled import CompiledForward, FastPathUnsupported
from omniflex.model.config import MODEL_SIZES, PRECISIONS, ModelConfig
from omniflex.model.generate import Generator, ModalityConstraint, TokenEvent
from omniflex.model.grammar import TokenGrammar
from omniflex.model.kv_cache import KVCache
from omniflex.model.sampling import GREEDY, SamplingConfig, constrain, sample_next
from omniflex.model.transformer import ModelOutput, OmniModel
from omniflex.model.vocab import VocabLayout

__all__ = [
    "GREEDY",
    "MODEL_SIZES",
    "PRECISIONS",
    "ChatFormatError",
    "ChatTemplate",
    "CompiledForward",
    "DecodedConversation",
    "EncodedConversation",
    "FastPathUnsupported",
    "Generator",
    "KVCache",
    "ModalityConstraint",
    "ModelConfig",
    "ModelOutput",
    "OmniModel",
    "SamplingConfig",
    "Span",
    "TokenEvent",
    "TokenGrammar",
    "VocabLayout",
    "canonical",
    "constrain",
    "sample_next",
]
