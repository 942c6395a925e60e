"""Synthetic, reproducible data: the omni corpus and the generators behind it."""

from omniflex.common.voices import HELD_OUT_VOICES, INPUT_VOICES, PRESET_VOICES, VOICES, Voice
from omniflex.data.adapters import ConversionReport, convert_dataset
from omniflex.data.build import SIZES, build_corpus
from omniflex.data.loader import CorpusLoader
from omniflex.data.shapes import SHAPE_KINDS, ShapeSpec, make_shapes_classification, render_shapes
from omniflex.data.shards import CorruptShardError, ShardSample, ShardWriter, read_shard
from omniflex.data.tasks import TASKS, Sample, make_sample

__all__ = [
    "HELD_OUT_VOICES",
    "INPUT_VOICES",
    "PRESET_VOICES",
    "SHAPE_KINDS",
    "SIZES",
    "TASKS",
    "VOICES",
    "ConversionReport",
    "CorpusLoader",
    "CorruptShardError",
    "Sample",
    "ShapeSpec",
    "ShardSample",
    "ShardWriter",
    "Voice",
    "build_corpus",
    "convert_dataset",
    "make_sample",
    "make_shapes_classification",
    "read_shard",
    "render_shapes",
]
