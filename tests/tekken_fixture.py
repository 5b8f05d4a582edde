"""A tiny but valid Mistral ``tekken.json`` for tiny test models.

The file loads in mistral-common (``MistralTokenizer.from_file``), so tests can use mistral-common
as the oracle for our decoder. Its vocabulary is small but realistic where it matters for
decoding: the 256 single bytes first, then English words with a leading space, suffixes, whole
multi-byte characters, and pieces that split multi-byte UTF-8 characters (é, ß, 日本, emoji)
across two tokens, then seeded filler (ASCII pieces and raw byte pairs, some of them invalid UTF-8).
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

NUM_SPECIAL = 1000

# The same regex the published Tekken files use (mistral-common's bundled tekken_240911.json).
TEKKEN_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
    r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Ranks 0..19 of the v7 layout (mistral-common needs them), then the audio/streaming ranks of
# Voxtral Realtime (doc §5.1). [TRANSCRIBE]'s rank in the real file is not confirmed; 34 and 35
# are this fixture's choice.
STANDARD_SPECIALS = {
    0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 5: "[AVAILABLE_TOOLS]",
    6: "[/AVAILABLE_TOOLS]", 7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]", 9: "[TOOL_CALLS]",
    10: "[IMG]", 11: "<pad>", 12: "[IMG_BREAK]", 13: "[IMG_END]", 14: "[PREFIX]", 15: "[MIDDLE]",
    16: "[SUFFIX]", 17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]", 19: "[TOOL_CONTENT]",
    24: "[AUDIO]", 25: "[BEGIN_AUDIO]", 32: "[STREAMING_PAD]", 33: "[STREAMING_WORD]",
    34: "[REPEAT_AUDIO_TEXT]", 35: "[TRANSCRIBE]",
}  # fmt: skip

_WORDS = (
    "the", "and", "of", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are",
    "with", "as", "his", "they", "be", "at", "one", "have", "this", "from", "hello", "world", "speech",
    "caption", "live", "model", "voice", "stream", "thin", "quick", "brown", "fox", "jumps", "over",
    "lazy", "dog", "today", "weather", "meeting", "about", "because", "people", "would", "there",
)  # fmt: skip

# Pieces that decode only together with a neighbour: é = c3 a9, ß = c3 9f, 日 = e6 97 a5,
# 本 = e6 9c ac, 😀 = f0 9f 98 80, 🎉 = f0 9f 8e 89.
SPLIT_PIECES = (
    b" caf\xc3", b"\xa9", b" stra\xc3", b"\x9fe", b"\xe6\x97", b"\xa5\xe6\x9c", b"\xac",
    b"\xf0\x9f", b"\x98\x80", b"\x8e\x89", b" \xf0\x9f\x98",
)  # fmt: skip
WHOLE_PIECES = tuple(
    s.encode()
    for s in ("ing", "ed", "tion", "é", "ß", " café", " straße", "日本", " 日本語", "😀", " naïve", "'s", ".")
)


def tiny_pieces(n_text: int, seed: int = 0) -> list[bytes]:
    """``n_text`` unique byte pieces: the 256 single bytes, the fixed realistic pieces, then filler."""
    if n_text < 256:
        raise ValueError(f"a Tekken vocabulary needs at least 256 text ids (the single bytes), got {n_text}")
    rng = random.Random(seed)
    pieces: list[bytes] = [bytes([b]) for b in range(256)]
    # Split and multi-byte pieces first, so that even the smallest vocabulary has them.
    fixed = list(SPLIT_PIECES) + list(WHOLE_PIECES) + [f" {w}".encode() for w in _WORDS]
    seen = set(pieces)
    for piece in fixed:
        if piece not in seen:
            pieces.append(piece)
            seen.add(piece)
    letters = "abcdefghijklmnopqrstuvwxyz"
    while len(pieces) < n_text:
        if rng.random() < 0.7:
            piece = (" " if rng.random() < 0.5 else "").encode() + "".join(
                rng.choice(letters) for _ in range(rng.randint(2, 6))
            ).encode()
        else:  # raw high bytes: continuation/lead bytes, often invalid UTF-8 on their own
            piece = bytes(rng.randint(0x80, 0xFF) for _ in range(rng.randint(2, 3)))
        if piece not in seen:
            pieces.append(piece)
            seen.add(piece)
    return pieces[:n_text]


def tiny_tekken_data(vocab_size: int = 1536, seed: int = 0, *, extra_entries: int = 16) -> dict:
    """The JSON object of a tiny tekken.json; ``extra_entries`` vocab entries beyond
    ``default_vocab_size`` mimic the real file (which lists more entries than the model uses)."""
    n_text = vocab_size - NUM_SPECIAL
    pieces = tiny_pieces(n_text + extra_entries, seed)
    vocab = []
    for rank, piece in enumerate(pieces):
        try:
            token_str: str | None = piece.decode("utf-8")
        except UnicodeDecodeError:
            token_str = None
        vocab.append(
            {"rank": rank, "token_bytes": base64.b64encode(piece).decode("ascii"), "token_str": token_str}
        )
    special_tokens = [
        {"rank": rank, "token_str": STANDARD_SPECIALS.get(rank, f"<SPECIAL_{rank}>"), "is_control": True}
        for rank in range(NUM_SPECIAL)
    ]
    return {
        "config": {
            "pattern": TEKKEN_PATTERN,
            "num_vocab_tokens": len(vocab),
            "default_vocab_size": vocab_size,
            "default_num_special_tokens": NUM_SPECIAL,
            "version": "v7",
        },
        "vocab": vocab,
        "special_tokens": special_tokens,
        "audio": {
            "sampling_rate": 16000,
            "frame_rate": 12.5,
            "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
            "transcription_delay_ms": 480,
            "streaming_look_ahead_ms": 2.5,
            "streaming_look_back_ms": 52.5,
            "streaming_n_left_pad_tokens": 32,
            "transcription_format": "streaming",
        },
    }


def write_tiny_tekken(path: Path, vocab_size: int = 1536, seed: int = 0, *, extra_entries: int = 16) -> Path:
    """Write a valid tiny tekken.json to ``path`` (a file path, or a directory to hold tekken.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tekken.json"
    path.write_text(
        json.dumps(tiny_tekken_data(vocab_size, seed, extra_entries=extra_entries)), encoding="utf-8"
    )
    return path
