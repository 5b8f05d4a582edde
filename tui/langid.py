"""Which of the model's 13 languages a finished caption segment is in.

The model has no language input (it detects the language itself), so voxcap can only *check*:
the user sets an expected language, and each finished segment is flagged when its detected
language differs. Detection is script first (Arabic, Devanagari, Hangul, kana, Han and Cyrillic
each point at one of the 13 languages), then, for Latin text, py3langid (offline, restricted to
the 13 languages). Short or ambiguous text gives ``None`` (unknown), which is never flagged:
one-word utterances are exactly where detectors guess.
"""

from __future__ import annotations

import threading
import unicodedata
from collections import Counter
from typing import Any

from tui.settings import AUTO_LANGUAGE, LANGUAGES

MIN_LATIN_CHARS = 12  # below this the statistical detector is a guess
MIN_CONFIDENCE = 0.80  # py3langid's normalized probability needed to name a language

# Unicode script (first word of the character name) -> language; Latin is decided statistically.
_SCRIPT_LANGUAGE = {"ARABIC": "ar", "DEVANAGARI": "hi", "HANGUL": "ko", "CYRILLIC": "ru"}


def _script_of(char: str) -> str | None:
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    if name.startswith("CJK UNIFIED IDEOGRAPH") or name.startswith("CJK COMPATIBILITY IDEOGRAPH"):
        return "HAN"
    if name.startswith(("HIRAGANA", "KATAKANA")):
        return "KANA"
    return name.split(" ", 1)[0] if name else None


def script_counts(text: str) -> Counter[str]:
    """Letters of ``text`` by script (LATIN, CYRILLIC, HAN, KANA, HANGUL, ...)."""
    return Counter(script for script in map(_script_of, text) if script is not None)


def detect_by_script(text: str) -> str | None:
    """The language a non-Latin script implies, 'latin' for Latin text, None when there are no letters."""
    counts = script_counts(text)
    if not counts:
        return None
    if counts["KANA"]:
        return "ja"  # kana only occur in Japanese; Japanese mixes them with Han
    script, _ = counts.most_common(1)[0]
    if script == "HAN":
        return "zh"
    if script == "LATIN":
        return "latin"
    return _SCRIPT_LANGUAGE.get(script)


class LanguageDetector:
    """Script rules plus py3langid for Latin text. Thread-safe; the statistical model loads lazily.

    :meth:`detect` never waits for the model: until :meth:`warm_up` (run it in a worker thread)
    has finished, Latin text is reported as unknown.
    """

    def __init__(self, use_statistical: bool = True) -> None:
        self._use_statistical = use_statistical
        self._identifier: Any = None
        self._lock = threading.Lock()
        self._failed = False

    @property
    def ready(self) -> bool:
        return self._identifier is not None or not self._use_statistical or self._failed

    def warm_up(self) -> None:
        """Load py3langid's model (about 0.5 s); a missing package leaves script-only detection."""
        if not self._use_statistical:
            return
        with self._lock:
            if self._identifier is not None or self._failed:
                return
            try:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier
            except ImportError:
                self._failed = True  # optional: script rules still work
                return
            identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            identifier.set_languages(list(LANGUAGES))
            self._identifier = identifier

    def detect(self, text: str) -> str | None:
        """ISO 639-1 code among the 13 languages, or None when unknown."""
        by_script = detect_by_script(text)
        if by_script != "latin":
            return by_script
        identifier = self._identifier
        letters = sum(1 for char in text if char.isalpha())
        if identifier is None or letters < MIN_LATIN_CHARS:
            return None
        language, confidence = identifier.classify(text)
        if confidence < MIN_CONFIDENCE or language not in LANGUAGES:
            return None
        return str(language)


def is_mismatch(detected: str | None, expected: str) -> bool:
    """Flag a segment only when both languages are known and differ."""
    return expected != AUTO_LANGUAGE and detected is not None and detected != expected
