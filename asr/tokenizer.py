"""Mistral's Tekken tokenizer, decode side only (transcription never encodes text).

Two sources build the same :class:`TekkenTokenizer`:

* ``tekken.json`` (Mistral's own file, shipped with ``consolidated.safetensors`` and the
  TrevorS GGUF): :meth:`TekkenTokenizer.from_file`.
* the vocabulary embedded in a transcribe.cpp GGUF (``tokenizer.ggml.model = "gpt2"``: every
  token is a string in the GPT-2 byte-to-unicode alphabet): :meth:`TekkenTokenizer.from_embedded`.

Ids below ``num_special`` (1000) are special/control ids and carry no text. Id ``i >= 1000`` is
the byte string of vocabulary entry ``i - 1000``. Decoding drops the special ids, joins the bytes
and decodes UTF-8 with ``errors="replace"`` (mistral-common's behaviour with its default IGNORE
policy). A live stream decodes incrementally through :meth:`TekkenTokenizer.decoder`, because a
byte-level piece may end in the middle of a multi-byte character.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from asr.errors import TokenizerError

DEFAULT_NUM_SPECIAL = 1000

# GGUF `tokenizer.ggml.token_type` values (gguf-py `TokenType`).
GGUF_TOKEN_NORMAL = 1
GGUF_TOKEN_UNKNOWN = 2
GGUF_TOKEN_CONTROL = 3
GGUF_TOKEN_UNUSED = 5
_GGUF_NO_TEXT_TYPES = frozenset({GGUF_TOKEN_UNKNOWN, GGUF_TOKEN_CONTROL, GGUF_TOKEN_UNUSED})

# Names of ranks 0..19, used when a tekken.json has no `special_tokens` list (files up to v7; the
# same defaults mistral-common applies).
_LEGACY_SPECIAL_NAMES = (
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
    "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
)  # fmt: skip

_REDOWNLOAD = "re-download the model's tekken.json (voxcap models download NAME) or pass the right file"


@dataclass(frozen=True, slots=True)
class TekkenAudioConfig:
    """The ``audio`` block of tekken.json (values the streaming front end relies on)."""

    sampling_rate: int | None = None
    frame_rate: float | None = None
    transcription_delay_ms: float | None = None
    streaming_n_left_pad_tokens: int | None = None
    streaming_look_ahead_ms: float | None = None
    streaming_look_back_ms: float | None = None
    transcription_format: str | None = None
    num_mel_bins: int | None = None
    hop_length: int | None = None
    window_size: int | None = None


@cache
def gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode table: printable Latin-1 bytes map to themselves, the
    other 68 bytes (controls, space, 0x7f-0xa0, 0xad) to U+0100 onwards, in byte order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table.values():
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


def gpt2_token_to_bytes(token: str) -> bytes:
    """Raw bytes of one GPT-2 byte-level token string (KeyError on a character outside the table)."""
    table = gpt2_byte_decoder()
    return bytes(table[ch] for ch in token)


class StreamDecoder:
    """Incremental text of a token stream: ``push(id)`` returns only what that id completes.

    Bytes of a character split across tokens are held back until the character is whole, so a
    caption never shows a garbled half character; control ids add nothing and do not break a
    pending character. ``flush()`` ends the stream (incomplete bytes become U+FFFD).
    """

    def __init__(self, tokenizer: TekkenTokenizer) -> None:
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        piece = self._tokenizer.piece(token_id)
        return self._utf8.decode(piece) if piece else ""

    def flush(self) -> str:
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text

    def reset(self) -> None:
        """Drop any pending bytes (a new stream starts)."""
        self._utf8.reset()

    @property
    def pending(self) -> bool:
        """True while bytes of an incomplete character are held back."""
        return bool(self._utf8.getstate()[0])


class TekkenTokenizer:
    """Id -> bytes/text mapping of a Tekken vocabulary.

    Attributes: ``num_special``, ``vocab_size`` (special + text ids), ``source`` (where it came
    from, for messages), ``version`` (tekken.json ``config.version`` or None), ``audio``
    (:class:`TekkenAudioConfig` or None) and its values as flat attributes
    (``transcription_delay_ms``, ``streaming_n_left_pad_tokens``, ...; None when absent).
    """

    def __init__(
        self,
        pieces: Sequence[bytes],
        special_names: Sequence[str],
        *,
        source: str = "<memory>",
        version: str | None = None,
        audio: TekkenAudioConfig | None = None,
    ) -> None:
        # pieces[i] is the text of id num_special + i; special_names[i] names id i.
        self._pieces: tuple[bytes, ...] = tuple(pieces)
        self._special_names: tuple[str, ...] = tuple(special_names)
        self._special_ids = {name: rank for rank, name in enumerate(self._special_names)}
        self.num_special = len(self._special_names)
        self.vocab_size = self.num_special + len(self._pieces)
        self.source = source
        self.version = version
        self.audio = audio

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def from_file(cls, path: str | Path, vocab_size: int | None = None) -> TekkenTokenizer:
        """Load tekken.json; ``vocab_size`` (the model's embedding rows) is checked when given."""
        path = Path(path)
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "not found"
            raise TokenizerError(
                f"tokenizer {path} {what}: put the model's tekken.json beside the weights "
                "(it ships in the model repository) or pass its path explicitly"
            )
        try:
            data = json.loads(path.read_bytes())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise TokenizerError(f"tokenizer {path} is not readable JSON ({error}); {_REDOWNLOAD}") from error
        return cls.from_json_data(data, source=str(path), vocab_size=vocab_size)

    @classmethod
    def from_json_data(
        cls, data: Any, *, source: str = "tekken.json", vocab_size: int | None = None
    ) -> TekkenTokenizer:
        """Build from the parsed JSON of a tekken.json (``source`` names it in errors)."""
        if not isinstance(data, dict):
            raise TokenizerError(f"tokenizer {source}: top level is not a JSON object; {_REDOWNLOAD}")
        config = _require(data, "config", dict, source)
        vocab = _require(data, "vocab", list, source)
        num_special = _require(config, "default_num_special_tokens", int, source, "config.")
        file_vocab_size = _require(config, "default_vocab_size", int, source, "config.")
        if num_special <= 0 or file_vocab_size <= num_special:
            raise TokenizerError(
                f"tokenizer {source}: config.default_vocab_size={file_vocab_size} must exceed "
                f"config.default_num_special_tokens={num_special}; {_REDOWNLOAD}"
            )
        if vocab_size is not None and vocab_size != file_vocab_size:
            raise TokenizerError(
                f"tokenizer {source} has {file_vocab_size} ids (config.default_vocab_size) but the model "
                f"has {vocab_size}: it belongs to another model; use the tekken.json shipped with the weights"
            )
        n_text = file_vocab_size - num_special
        if len(vocab) < n_text:
            raise TokenizerError(
                f"tokenizer {source}: 'vocab' has {len(vocab)} entries but config.default_vocab_size="
                f"{file_vocab_size} needs {n_text} (the file is truncated or not this model's); {_REDOWNLOAD}"
            )
        pieces = [_vocab_entry_bytes(entry, rank, source) for rank, entry in enumerate(vocab[:n_text])]
        _check_byte_pieces(pieces, source)
        if len(set(pieces)) != len(pieces):
            raise TokenizerError(f"tokenizer {source}: 'vocab' repeats a token_bytes value; {_REDOWNLOAD}")
        names = _special_names(data.get("special_tokens"), num_special, source)
        version = config.get("version")
        return cls(
            pieces,
            names,
            source=source,
            version=version if isinstance(version, str) else None,
            audio=_audio_config(data.get("audio"), source),
        )

    @classmethod
    def from_embedded(
        cls,
        tokens: list[str],
        token_types: list[int] | None,
        num_special: int = DEFAULT_NUM_SPECIAL,
        *,
        vocab_size: int | None = None,
        source: str = "GGUF tokenizer.ggml.tokens",
    ) -> TekkenTokenizer:
        """Build from a GGUF-embedded gpt2-style vocabulary (transcribe.cpp files).

        ``tokens[i]`` is id ``i``: for ``i < num_special`` the special token's name, otherwise the
        piece's bytes in the GPT-2 byte-to-unicode alphabet. Ids typed CONTROL/UNKNOWN/UNUSED in
        ``token_types`` carry no text.
        """
        if vocab_size is not None and vocab_size != len(tokens):
            raise TokenizerError(
                f"{source} has {len(tokens)} tokens but the model has {vocab_size} embedding rows: "
                "the file is inconsistent; re-download it"
            )
        if len(tokens) <= num_special:
            raise TokenizerError(
                f"{source} has {len(tokens)} tokens, not more than the {num_special} special ids; "
                "the file is not a Voxtral GGUF or is damaged; re-download it"
            )
        if token_types is not None and len(token_types) != len(tokens):
            raise TokenizerError(
                f"{source}: tokenizer.ggml.token_type has {len(token_types)} entries for {len(tokens)} "
                "tokens; the file is damaged; re-download it"
            )
        pieces: list[bytes] = []
        for token_id in range(num_special, len(tokens)):
            if token_types is not None and token_types[token_id] in _GGUF_NO_TEXT_TYPES:
                pieces.append(b"")
                continue
            token = tokens[token_id]
            try:
                pieces.append(gpt2_token_to_bytes(token))
            except (KeyError, TypeError) as error:
                raise TokenizerError(
                    f"{source}: token {token_id} {token!r} is not in GPT-2 byte-level form "
                    "(tokenizer.ggml.model must be 'gpt2'); the file is not supported"
                ) from error
        _check_byte_pieces(pieces, source, allow_empty=True)
        names = [str(name) for name in tokens[:num_special]]
        if len(set(names)) != len(names):
            names = [name if names.count(name) == 1 else f"<SPECIAL_{i}>" for i, name in enumerate(names)]
        return cls(pieces, names, source=source)

    # ---------------------------------------------------------------------------------- decoding
    def is_special(self, token_id: int) -> bool:
        return 0 <= token_id < self.num_special

    def piece(self, token_id: int) -> bytes:
        """The bytes id ``token_id`` adds to the text (b'' for special ids)."""
        if 0 <= token_id < self.num_special:
            return b""
        if self.num_special <= token_id < self.vocab_size:
            return self._pieces[token_id - self.num_special]
        raise TokenizerError(
            f"token id {token_id} is outside the vocabulary of {self.source} (0..{self.vocab_size - 1}); "
            "the tokenizer does not belong to this model"
        )

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a whole id sequence: special ids dropped, bytes joined, UTF-8 with replacement."""
        return b"".join(self.piece(int(token_id)) for token_id in ids).decode("utf-8", errors="replace")

    def decoder(self) -> StreamDecoder:
        """A fresh incremental decoder for one live stream."""
        return StreamDecoder(self)

    # ------------------------------------------------------------------------------ special ids
    def special_name(self, token_id: int) -> str:
        """Name of a special id, e.g. ``special_name(32) == '[STREAMING_PAD]'``."""
        if not self.is_special(token_id):
            raise TokenizerError(f"token id {token_id} is not a special id of {self.source}")
        return self._special_names[token_id]

    def special_id(self, name: str) -> int:
        """Id of a named special token, e.g. ``special_id('[STREAMING_PAD]') == 32``."""
        try:
            return self._special_ids[name]
        except KeyError:
            raise TokenizerError(
                f"{self.source} has no special token {name!r}; it is not a Voxtral Realtime tokenizer"
            ) from None

    @property
    def bos_id(self) -> int:
        return self._special_ids.get("<s>", 1)

    @property
    def eos_id(self) -> int:
        return self._special_ids.get("</s>", 2)

    @property
    def streaming_pad_id(self) -> int:
        return self._special_ids.get("[STREAMING_PAD]", 32)

    @property
    def streaming_word_id(self) -> int:
        return self._special_ids.get("[STREAMING_WORD]", 33)

    # ------------------------------------------------------------------------ audio block values
    @property
    def sampling_rate(self) -> int | None:
        return self.audio.sampling_rate if self.audio else None

    @property
    def frame_rate(self) -> float | None:
        return self.audio.frame_rate if self.audio else None

    @property
    def transcription_delay_ms(self) -> float | None:
        return self.audio.transcription_delay_ms if self.audio else None

    @property
    def streaming_n_left_pad_tokens(self) -> int | None:
        return self.audio.streaming_n_left_pad_tokens if self.audio else None

    @property
    def streaming_look_ahead_ms(self) -> float | None:
        return self.audio.streaming_look_ahead_ms if self.audio else None

    @property
    def streaming_look_back_ms(self) -> float | None:
        return self.audio.streaming_look_back_ms if self.audio else None

    @property
    def transcription_format(self) -> str | None:
        return self.audio.transcription_format if self.audio else None

    def __repr__(self) -> str:
        return (
            f"TekkenTokenizer(source={self.source!r}, vocab_size={self.vocab_size}, "
            f"num_special={self.num_special})"
        )


# ----------------------------------------------------------------------------------- validation
def _require(obj: dict, key: str, kind: type, source: str, prefix: str = "") -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        found = "missing" if key not in obj else f"a {type(value).__name__}"
        raise TokenizerError(
            f"tokenizer {source}: '{prefix}{key}' is {found}, expected a {kind.__name__}; {_REDOWNLOAD}"
        )
    return value


def _vocab_entry_bytes(entry: Any, rank: int, source: str) -> bytes:
    if not isinstance(entry, dict) or not isinstance(entry.get("token_bytes"), str):
        raise TokenizerError(f"tokenizer {source}: vocab[{rank}] has no 'token_bytes' string; {_REDOWNLOAD}")
    if entry.get("rank", rank) != rank:
        raise TokenizerError(
            f"tokenizer {source}: vocab[{rank}] has rank {entry.get('rank')!r}, expected {rank}; "
            f"{_REDOWNLOAD}"
        )
    try:
        return base64.b64decode(entry["token_bytes"], validate=True)
    except (binascii.Error, ValueError) as error:
        raise TokenizerError(
            f"tokenizer {source}: vocab[{rank}].token_bytes is not base64 ({error}); {_REDOWNLOAD}"
        ) from error


def _check_byte_pieces(pieces: Sequence[bytes], source: str, *, allow_empty: bool = False) -> None:
    """Tekken's first 256 text ids are the single bytes 0..255; anything else means a wrong
    special-token count or a file that is not Tekken."""
    for value, piece in enumerate(pieces[:256]):
        if piece != bytes([value]) and not (allow_empty and piece == b""):
            raise TokenizerError(
                f"tokenizer {source}: text id {value} should be the single byte 0x{value:02x} but is "
                f"{piece!r}; the vocabulary is not Tekken or the special-token count is wrong"
            )
    if len(pieces) < 256:
        raise TokenizerError(
            f"tokenizer {source}: only {len(pieces)} text ids, fewer than the 256 single bytes; {_REDOWNLOAD}"
        )


def _special_names(entries: Any, num_special: int, source: str) -> list[str]:
    names = [
        _LEGACY_SPECIAL_NAMES[rank] if rank < len(_LEGACY_SPECIAL_NAMES) else f"<SPECIAL_{rank}>"
        for rank in range(num_special)
    ]
    if entries is None:
        return names
    if not isinstance(entries, list):
        raise TokenizerError(f"tokenizer {source}: 'special_tokens' is not a list; {_REDOWNLOAD}")
    seen: set[int] = set()
    for index, entry in enumerate(entries):
        rank = entry.get("rank") if isinstance(entry, dict) else None
        name = entry.get("token_str") if isinstance(entry, dict) else None
        if not isinstance(rank, int) or not isinstance(name, str) or not 0 <= rank < num_special:
            raise TokenizerError(
                f"tokenizer {source}: special_tokens[{index}] needs an integer 'rank' below {num_special} "
                f"and a 'token_str'; {_REDOWNLOAD}"
            )
        if rank in seen:
            raise TokenizerError(
                f"tokenizer {source}: special token rank {rank} appears twice; {_REDOWNLOAD}"
            )
        seen.add(rank)
        names[rank] = name
    if len(set(names)) != len(names):
        raise TokenizerError(f"tokenizer {source}: special token names are not unique; {_REDOWNLOAD}")
    return names


def _audio_config(block: Any, source: str) -> TekkenAudioConfig | None:
    if block is None:
        return None
    if not isinstance(block, dict):
        raise TokenizerError(f"tokenizer {source}: 'audio' is not an object; {_REDOWNLOAD}")
    encoding = block.get("audio_encoding_config")
    encoding = encoding if isinstance(encoding, dict) else {}

    def number(obj: dict, key: str, kind: type) -> Any:
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TokenizerError(f"tokenizer {source}: audio.{key}={value!r} is not a number; {_REDOWNLOAD}")
        return kind(value)

    fmt = block.get("transcription_format")
    return TekkenAudioConfig(
        sampling_rate=number(block, "sampling_rate", int),
        frame_rate=number(block, "frame_rate", float),
        transcription_delay_ms=number(block, "transcription_delay_ms", float),
        streaming_n_left_pad_tokens=number(block, "streaming_n_left_pad_tokens", int),
        streaming_look_ahead_ms=number(block, "streaming_look_ahead_ms", float),
        streaming_look_back_ms=number(block, "streaming_look_back_ms", float),
        transcription_format=str(fmt) if fmt is not None else None,
        num_mel_bins=number(encoding, "num_mel_bins", int),
        hop_length=number(encoding, "hop_length", int),
        window_size=number(encoding, "window_size", int),
    )
