"""Modality tokenizers: text BPE, image VQ, streaming audio codec, video interleaving."""

from omniflex.tokenizers.base import (
    ASSETS,
    NeuralTokenizer,
    Tokenizer,
    TokenizerError,
    load_tokenizer,
    register_tokenizer,
)
from omniflex.tokenizers.fsq import FSQ
from omniflex.tokenizers.streaming import StreamingModule

__all__ = [
    "ASSETS",
    "FSQ",
    "NeuralTokenizer",
    "StreamingModule",
    "Tokenizer",
    "TokenizerError",
    "load_tokenizer",
    "register_tokenizer",
]
