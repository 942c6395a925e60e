"""The safety layer: preset voices, a streaming output voice classifier, and moderation.

See ``DESIGN.md`` ("Safety"): each GPT-4o system card risk has a mitigation here and a measured
evaluation in ``omniflex.eval.safety_classifiers``.
"""

from omniflex.safety.policy import REFUSAL, Moderation, ModerationResult, Policy, PolicyVerdict
from omniflex.safety.voice_classifier import (
    VoiceClassifier,
    VoiceDecision,
    VoiceGuard,
    load_voice_classifier,
    save_voice_classifier,
)
from omniflex.safety.voices import OPENAI_VOICES, preset_voice, resolve_voice

__all__ = [
    "OPENAI_VOICES",
    "REFUSAL",
    "Moderation",
    "ModerationResult",
    "Policy",
    "PolicyVerdict",
    "VoiceClassifier",
    "VoiceDecision",
    "VoiceGuard",
    "load_voice_classifier",
    "preset_voice",
    "resolve_voice",
    "save_voice_classifier",
]
