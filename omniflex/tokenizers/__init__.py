"""Modality tokenizers: text BPE, image VQ, streaming audio codec, video interleaving."""

from omniflex.tokenizers import special
from omniflex.tokenizers.audio import AudioCodec, AudioCodecConfig
from omniflex.tokenizers.base import (
    ASSETS,
    NeuralTokenizer,
    Tokenizer,
    TokenizerError,
    load_tokenizer,
    register_tokenizer,
)
from omniflex.tokenizers.fsq import FSQ
from omniflex.tokenizers.image import ImageTokenizer, ImageTokenizerConfig
from omniflex.tokenizers.streaming import StreamingModule
from omniflex.tokenizers.text import TextTokenizer, TextTokenizerConfig, train_text_tokenizer

__all__ = [
    "ASSETS",
    "FSQ",
    "AudioCodec",
    "AudioCodecConfig",
    "ImageTokenizer",
    "ImageTokenizerConfig",
    "NeuralTokenizer",
    "StreamingModule",
    "TextTokenizer",
    "TextTokenizerConfig",
    "Tokenizer",
    "TokenizerError",
    "load_tokenizer",
    "register_tokenizer",
    "special",
    "train_text_tokenizer",
]
