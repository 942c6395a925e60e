"""Moderation of text going in (user text, transcripts of user audio) and out (answers, transcripts
of spoken answers), and the policy that turns a flag into a refusal and a log event.

Two layers, as in the GPT-4o system card's "disallowed content" mitigation:

* **Exact rules** where a rule can be exact: a short list of unambiguous harm phrases per
  category (``RULES``), matched on word boundaries after normalisation (lower case, punctuation
  dropped). A rule hit is always a flag, with ``rule`` naming it.
* **A text classifier** for everything else: TF-IDF over word 1-2-grams and character 2-5-grams
  (inside word boundaries, so it tolerates ASR misspellings) + logistic regression, trained by
  ``moderation_train.py``. Weights ship as JSON (vocabulary, idf, coefficients): no pickle.

``Moderation.check(text)`` returns a ``ModerationResult``; ``Policy.check_input`` /
``check_output`` add the fixed refusal and a ``{"type": "safety.blocked", ...}`` event.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "REFUSAL",
    "RULES",
    "SHIPPED",
    "Moderation",
    "ModerationResult",
    "Policy",
    "PolicyVerdict",
    "normalise",
]

SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "safety" / "moderation"
MODEL_FILE = "model.json"
REFUSAL = "I can't help with that."

# Exact rules: phrases that are disallowed requests in any context. Kept short on purpose: a
# phrase goes here only if no benign reading exists; everything fuzzy is the classifier's job.
RULES: dict[str, tuple[str, ...]] = {
    "violence": (
        "hurt someone", "hurt people", "kill someone", "kill a person", "poison someone",
    ),
    "weapons": ("make a bomb", "making a bomb", "build a bomb", "weapon to hurt"),
    "cybercrime": ("steal someone's password", "steal a password", "hack into someone's"),
}  # fmt: skip


def normalise(text: str) -> str:
    """Lower case, apostrophes kept, other punctuation to spaces, whitespace collapsed."""
    text = text.lower().replace("\u2019", "'")
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text).split())


_RULE_PATTERNS = [
    (category, phrase, re.compile(rf"\b{re.escape(normalise(phrase))}\b"))
    for category, phrases in RULES.items()
    for phrase in phrases
]


@dataclass(frozen=True)
class ModerationResult:
    """``flagged``: disallowed; ``category``: rule category or ``"disallowed"`` (classifier) or
    ``None``; ``score``: classifier probability of disallowed; ``rule``: the matched phrase."""

    flagged: bool
    category: str | None
    score: float
    rule: str | None


class Moderation:
    """Rules + TF-IDF logistic regression; ``check(text)`` flags disallowed requests."""

    def __init__(self, weights: dict[str, Any]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.threshold = float(weights["threshold"])
        self.metadata = weights.get("metadata", {})
        self._parts = []
        for part in weights["vectorizers"]:
            vec = TfidfVectorizer(
                analyzer=part["analyzer"],
                ngram_range=tuple(part["ngram_range"]),
                vocabulary=part["vocabulary"],
                sublinear_tf=True,
                preprocessor=normalise,
            )
            vec.idf_ = np.asarray(part["idf"], dtype=np.float64)
            self._parts.append((vec, np.asarray(part["coef"], dtype=np.float64)))
        self.intercept = float(weights["intercept"])

    @classmethod
    def from_shipped(cls) -> Moderation:
        return cls.load(SHIPPED)

    @classmethod
    def load(cls, directory: str | Path) -> Moderation:
        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no moderation model at {path}; train one: "
                f"`omniflex safety train-moderation --out {directory}`"
            )
        return cls(json.loads(path.read_text()))

    def score(self, texts: list[str]) -> np.ndarray:
        """Classifier probability of *disallowed* for each text, ``(N,)``."""
        logit = np.full(len(texts), self.intercept)
        for vec, coef in self._parts:
            logit += vec.transform(texts) @ coef
        return 1.0 / (1.0 + np.exp(-logit))

    def check(self, text: str, *, classifier: bool = True) -> ModerationResult:
        """Rules, then (``classifier=True``) the request classifier."""
        if not isinstance(text, str):
            raise ValueError(
                f"moderation checks text (str), got {type(text).__name__}; transcribe audio first"
            )
        norm = normalise(text)
        score = float(self.score([text])[0]) if norm and classifier else 0.0
        for category, phrase, pattern in _RULE_PATTERNS:
            if pattern.search(norm):
                return ModerationResult(True, category, score, phrase)
        flagged = classifier and score >= self.threshold
        return ModerationResult(flagged, "disallowed" if flagged else None, score, None)


@dataclass(frozen=True)
class PolicyVerdict:
    """``allowed``; ``refusal``: what to answer instead (None if allowed); ``event``: a dict to
    log (None if allowed); ``result``: the moderation result behind it."""

    allowed: bool
    refusal: str | None
    event: dict[str, Any] | None
    result: ModerationResult


class Policy:
    """What the server applies: moderation on input and output text, one fixed refusal."""

    refusal = REFUSAL

    def __init__(self, moderation: Moderation | None = None) -> None:
        self.moderation = moderation or Moderation.from_shipped()

    def check_input(self, text: str, *, source: str = "text") -> PolicyVerdict:
        """User text, or the transcript of user audio (``source="transcript"``)."""
        return self._verdict("input", source, text)

    def check_output(self, text: str, *, source: str = "text") -> PolicyVerdict:
        """The answer's text, or the transcript of its audio, before (or while) it is sent.

        Rules only: the classifier was trained on the corpus's *requests*, and on answers it
        mistakes the model's own refusals ("I can't copy other people's voices.") for disallowed
        requests; the corpus has no labelled harmful answers to train an answer classifier on."""
        return self._verdict("output", source, text, classifier=False)

    def _verdict(
        self, direction: str, source: str, text: str, *, classifier: bool = True
    ) -> PolicyVerdict:
        result = self.moderation.check(text, classifier=classifier)
        if not result.flagged:
            return PolicyVerdict(True, None, None, result)
        event = {
            "type": "safety.blocked",
            "layer": "moderation",
            "direction": direction,
            "source": source,
            "category": result.category,
            "rule": result.rule,
            "score": round(result.score, 4),
            "chars": len(text),
        }
        return PolicyVerdict(False, self.refusal, event, result)
