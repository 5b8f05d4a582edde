"""Tekken decoding against mistral-common (the reference tokenizer) as the oracle."""

from __future__ import annotations

import base64
import io
import json
import random
import wave
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.vocab import bytes_to_unicode
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from mistral_common.tokens.tokenizers.tekken import Tekkenizer

from asr.errors import TokenizerError
from asr.tokenizer import TekkenTokenizer, gpt2_token_to_bytes
from tests.tekken_fixture import SPLIT_PIECES, tiny_tekken_data, write_tiny_tekken


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    return write_tiny_tekken(tmp_path_factory.mktemp("tok") / "tekken.json")


@pytest.fixture(scope="module")
def ours(tiny_path) -> TekkenTokenizer:
    return TekkenTokenizer.from_file(tiny_path, vocab_size=1536)


@pytest.fixture(scope="module")
def oracle(tiny_path) -> Tekkenizer:
    return MistralTokenizer.from_file(str(tiny_path)).instruct_tokenizer.tokenizer


def _oracle_decode(oracle: Tekkenizer, ids: list[int]) -> str:
    # mistral-common decodes each run of text ids separately (a special id between two halves of
    # a character yields two U+FFFD); ours joins the bytes across special ids, as a live caption
    # must. Dropping the special ids first makes the two definitions identical.
    return oracle.decode([i for i in ids if i >= oracle.num_special_tokens])


def _random_ids(rng: random.Random, vocab_size: int, n: int, p_special: float = 0.3) -> list[int]:
    specials = [1, 2, 11, 32, 33, 32, 32]
    return [
        rng.choice(specials) if rng.random() < p_special else rng.randrange(1000, vocab_size)
        for _ in range(n)
    ]


# --------------------------------------------------------------------------------- the fixture
def test_fixture_is_a_valid_voxtral_tokenizer_for_mistral_common(tiny_path) -> None:
    from mistral_common.protocol.instruct.chunk import RawAudio
    from mistral_common.protocol.transcription.request import StreamingMode, TranscriptionRequest
    from mistral_common.tokens.tokenizers.audio import Audio

    mistral = MistralTokenizer.from_file(str(tiny_path))
    tok = mistral.instruct_tokenizer.tokenizer
    assert tok.n_words == 1536 and tok.num_special_tokens == 1000
    assert tok.get_special_token("[STREAMING_PAD]") == 32
    assert tok.get_special_token("[STREAMING_WORD]") == 33
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(np.zeros(16000, np.int16).tobytes())
    request = TranscriptionRequest(
        audio=RawAudio.from_audio(Audio.from_bytes(buffer.getvalue())), streaming=StreamingMode.OFFLINE
    )
    tokens = mistral.instruct_tokenizer.encode_transcription(request).tokens
    assert tokens == [1] + [32] * 38  # doc §5.1: BOS + 38 pads at 480 ms


@pytest.mark.parametrize("vocab_size", [1256, 1300, 2048])
def test_fixture_sizes_and_seeds_load_in_both(tmp_path, vocab_size) -> None:
    for seed in (0, 1):
        path = write_tiny_tekken(tmp_path / f"tekken_{vocab_size}_{seed}.json", vocab_size, seed)
        tok = Tekkenizer.from_file(path)
        assert tok.n_words == vocab_size
        assert TekkenTokenizer.from_file(path, vocab_size=vocab_size).vocab_size == vocab_size


def test_fixture_has_extra_entries_that_do_not_count(tiny_path, ours) -> None:
    data = json.loads(tiny_path.read_text())
    assert len(data["vocab"]) > 1536 - 1000  # like the real file, more entries than ids
    assert ours.vocab_size == 1536
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        ours.piece(1536)


# ------------------------------------------------------------------------------ whole sequences
def test_random_sequences_decode_like_mistral_common(ours, oracle) -> None:
    rng = random.Random(1234)
    for _ in range(500):
        ids = _random_ids(rng, 1536, rng.randint(0, 40))
        assert ours.decode(ids) == _oracle_decode(oracle, ids), ids


def test_text_only_sequences_decode_exactly_like_mistral_common(ours, oracle) -> None:
    rng = random.Random(7)
    for _ in range(300):
        ids = _random_ids(rng, 1536, rng.randint(1, 30), p_special=0.0)
        assert ours.decode(ids) == oracle.decode(ids)


def test_each_id_has_mistral_common_bytes(ours, oracle) -> None:
    for token_id in range(1536):
        assert ours.piece(token_id) == oracle.id_to_byte_piece(token_id), token_id


def test_documented_example(ours, oracle) -> None:
    ids = oracle.encode(" the thin", bos=False, eos=False)
    assert ours.decode([32, 33, *ids, 32, 2]) == " the thin"


# ------------------------------------------------------------------------------------ streaming
@pytest.mark.parametrize("seed", range(5))
def test_streaming_push_concatenates_to_the_oracle_text(ours, oracle, seed) -> None:
    rng = random.Random(seed)
    for _ in range(100):
        ids = _random_ids(rng, 1536, rng.randint(0, 50))
        decoder = ours.decoder()
        text = "".join(decoder.push(i) for i in ids) + decoder.flush()
        assert text == _oracle_decode(oracle, ids)


def test_split_characters_come_out_whole_and_once(ours, oracle) -> None:
    def ids_of(*pieces: bytes) -> list[int]:
        return [1000 + oracle._model._mergeable_ranks[p] for p in pieces]

    cases = {
        " café": ids_of(b" caf\xc3", b"\xa9"),
        " straße": ids_of(b" stra\xc3", b"\x9fe"),
        "日本": ids_of(b"\xe6\x97", b"\xa5\xe6\x9c", b"\xac"),
        "😀🎉": ids_of(b"\xf0\x9f", b"\x98\x80", b"\xf0\x9f", b"\x8e\x89"),
    }
    for expected, ids in cases.items():
        for with_pads in (False, True):
            stream = [x for i in ids for x in ((i, 32, 33) if with_pads else (i,))]
            decoder = ours.decoder()
            outputs = [decoder.push(i) for i in stream]
            assert "".join(outputs) == expected
            assert not decoder.pending and decoder.flush() == ""
            assert all("\ufffd" not in out for out in outputs)
            assert ours.decode(stream) == expected
    # The character appears with the token that completes it, not before.
    decoder = ours.decoder()
    assert decoder.push(ids_of(b" caf\xc3")[0]) == " caf"
    assert decoder.pending
    assert decoder.push(32) == ""
    assert decoder.push(ids_of(b"\xa9")[0]) == "é"


def test_streaming_never_emits_replacement_for_valid_text(ours) -> None:
    # Random sequences of the split pieces and whole words that form valid UTF-8 overall: no push
    # may ever return U+FFFD, whatever the token boundaries.
    rng = random.Random(3)
    pairs = [(b" caf\xc3", b"\xa9"), (b"\xf0\x9f", b"\x98\x80"), (b"\xe6\x97", b"\xa5\xe6\x9c", b"\xac")]
    by_bytes = {ours.piece(i): i for i in range(1000, 1536)}
    for _ in range(200):
        stream: list[int] = []
        for _ in range(rng.randint(1, 8)):
            group = rng.choice([*pairs, (b" the",), (b" hello",)])
            for piece in group:
                stream.append(by_bytes[piece])
                if rng.random() < 0.4:
                    stream.append(32)
        decoder = ours.decoder()
        assert all("\ufffd" not in decoder.push(i) for i in stream)
        assert decoder.flush() == ""


def test_flush_replaces_an_unfinished_character_and_resets(ours) -> None:
    by_bytes = {ours.piece(i): i for i in range(1000, 1536)}
    decoder = ours.decoder()
    assert decoder.push(by_bytes[b"\xf0\x9f"]) == ""
    assert decoder.flush() == "\ufffd"
    assert decoder.push(by_bytes[b" the"]) == " the"  # fresh state after flush


def test_split_pieces_are_in_the_fixture(ours) -> None:
    pieces = {ours.piece(i) for i in range(1000, 1536)}
    assert set(SPLIT_PIECES) <= pieces


# ------------------------------------------------------------------------------ embedded (GGUF)
def _gpt2_strings(data: dict) -> list[str]:
    """transcribe.cpp's layout: names of the 1000 special ids, then gpt2-encoded pieces (encoded
    with gguf-py's bytes_to_unicode, independent of ours)."""
    to_unicode = bytes_to_unicode()
    n_text = data["config"]["default_vocab_size"] - 1000
    specials = [s["token_str"] for s in data["special_tokens"]]
    pieces = [base64.b64decode(v["token_bytes"]) for v in data["vocab"][:n_text]]
    return specials + ["".join(to_unicode[b] for b in piece) for piece in pieces]


def test_embedded_vocab_decodes_like_mistral_common(tiny_path, oracle) -> None:
    data = json.loads(tiny_path.read_text())
    tokens = _gpt2_strings(data)
    types = [gguf.TokenType.CONTROL] * 1000 + [gguf.TokenType.NORMAL] * (len(tokens) - 1000)
    tok = TekkenTokenizer.from_embedded(tokens, [int(t) for t in types], 1000)
    assert tok.vocab_size == 1536
    assert tok.special_id("[STREAMING_PAD]") == 32 and tok.special_name(33) == "[STREAMING_WORD]"
    rng = random.Random(5)
    for _ in range(300):
        ids = _random_ids(rng, 1536, rng.randint(0, 40))
        assert tok.decode(ids) == _oracle_decode(oracle, ids)
        decoder = tok.decoder()
        assert "".join(decoder.push(i) for i in ids) + decoder.flush() == _oracle_decode(oracle, ids)


def test_embedded_vocab_round_trips_through_a_real_gguf(tmp_path, tiny_path, ours) -> None:
    data = json.loads(tiny_path.read_text())
    tokens = _gpt2_strings(data)
    path = tmp_path / "tok.gguf"
    writer = gguf.GGUFWriter(str(path), "voxtral_realtime")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL] * 1000 + [gguf.TokenType.NORMAL] * (len(tokens) - 1000))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader = gguf.GGUFReader(str(path))
    read_tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    read_types = reader.fields["tokenizer.ggml.token_type"].contents()
    tok = TekkenTokenizer.from_embedded(read_tokens, read_types)
    assert [tok.piece(i) for i in range(1536)] == [ours.piece(i) for i in range(1536)]


def test_embedded_without_types_and_gpt2_mapping() -> None:
    to_unicode = bytes_to_unicode()
    for value in range(256):
        assert gpt2_token_to_bytes(to_unicode[value]) == bytes([value])
    assert gpt2_token_to_bytes("Ġthe") == b" the"
    tokens = (
        [f"<SPECIAL_{i}>" for i in range(1000)] + [to_unicode[b] for b in range(256)] + ["Ġcaf\u00c3", "Â©"]
    )
    tok = TekkenTokenizer.from_embedded(tokens, None)
    assert tok.piece(1256) == b" caf\xc3" and tok.piece(1257) == "©".encode()
    assert tok.decode([1256, 1257]) == " caf\ufffd©"  # a lone lead byte before a whole character


def test_embedded_control_types_above_special_range_have_no_text() -> None:
    to_unicode = bytes_to_unicode()
    tokens = [f"<S{i}>" for i in range(1000)] + [to_unicode[b] for b in range(256)] + ["[NOT_TEXT]"]
    types = [3] * 1000 + [1] * 256 + [3]
    tok = TekkenTokenizer.from_embedded(tokens, types)
    assert tok.piece(1256) == b""


@pytest.mark.parametrize(
    ("tokens", "types", "message"),
    [
        (["<s>"] * 10, None, "not more than the 1000 special ids"),
        ([f"<{i}>" for i in range(1000)] + ["\u4e00"] * 300, None, "not in GPT-2 byte-level form"),
        ([f"<{i}>" for i in range(1000)] + ["a"] * 300, None, "single byte"),
        ([f"<{i}>" for i in range(1256)], [1] * 5, "token_type has 5 entries"),
    ],
)
def test_embedded_vocab_errors(tokens, types, message) -> None:
    with pytest.raises(TokenizerError, match=message):
        TekkenTokenizer.from_embedded(tokens, types)


def test_embedded_vocab_size_must_match_the_model() -> None:
    to_unicode = bytes_to_unicode()
    tokens = [f"<{i}>" for i in range(1000)] + [to_unicode[b] for b in range(256)]
    with pytest.raises(TokenizerError, match="1256 tokens but the model has 2048"):
        TekkenTokenizer.from_embedded(tokens, None, vocab_size=2048)


# ------------------------------------------------------------------------- metadata and errors
def test_audio_block_and_special_ids(ours) -> None:
    assert ours.sampling_rate == 16000
    assert ours.frame_rate == 12.5
    assert ours.transcription_delay_ms == 480
    assert ours.streaming_n_left_pad_tokens == 32
    assert ours.streaming_look_ahead_ms == 2.5
    assert ours.streaming_look_back_ms == 52.5
    assert ours.transcription_format == "streaming"
    assert ours.audio is not None and ours.audio.num_mel_bins == 128 and ours.audio.hop_length == 160
    assert (ours.bos_id, ours.eos_id, ours.streaming_pad_id, ours.streaming_word_id) == (1, 2, 32, 33)
    assert ours.version == "v7"
    assert ours.is_special(999) and not ours.is_special(1000)


def test_missing_audio_block_gives_none(tmp_path) -> None:
    data = tiny_tekken_data()
    del data["audio"]
    path = tmp_path / "tekken.json"
    path.write_text(json.dumps(data))
    tok = TekkenTokenizer.from_file(path)
    assert tok.audio is None and tok.transcription_delay_ms is None


def _broken(tmp_path: Path, mutate) -> Path:
    data = tiny_tekken_data()
    mutate(data)
    path = tmp_path / "tekken.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("config"), "'config' is missing"),
        (lambda d: d.pop("vocab"), "'vocab' is missing"),
        (lambda d: d["config"].pop("default_vocab_size"), "config.default_vocab_size' is missing"),
        (lambda d: d["config"].update(default_num_special_tokens="1000"), "expected a int"),
        (lambda d: d.update(vocab=d["vocab"][:100]), "'vocab' has 100 entries"),
        (lambda d: d["vocab"][300].update(token_bytes="@@@"), r"vocab\[300\].token_bytes is not base64"),
        (lambda d: d["vocab"][301].update(rank=7), r"vocab\[301\] has rank 7"),
        (lambda d: d["vocab"][5].update(token_bytes="QQ=="), "should be the single byte 0x05"),
        (lambda d: d["vocab"][400].update(token_bytes=d["vocab"][401]["token_bytes"]), "repeats"),
        (lambda d: d["special_tokens"][3].update(token_str="<s>"), "not unique"),
        (lambda d: d["special_tokens"][3].update(rank=1000), "rank' below 1000"),
        (lambda d: d["audio"].update(transcription_delay_ms="soon"), "audio.transcription_delay_ms"),
    ],
)
def test_malformed_files_raise_tokenizer_error_naming_the_file(tmp_path, mutate, message) -> None:
    path = _broken(tmp_path, mutate)
    with pytest.raises(TokenizerError, match=message) as info:
        TekkenTokenizer.from_file(path)
    assert str(path) in str(info.value)


def test_missing_file_and_bad_json(tmp_path) -> None:
    with pytest.raises(TokenizerError, match="not found") as info:
        TekkenTokenizer.from_file(tmp_path / "nope" / "tekken.json")
    assert "tekken.json beside the weights" in str(info.value)
    with pytest.raises(TokenizerError, match="is a directory"):
        TekkenTokenizer.from_file(tmp_path)
    bad = tmp_path / "tekken.json"
    bad.write_text('{"config": ')
    with pytest.raises(TokenizerError, match="not readable JSON"):
        TekkenTokenizer.from_file(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(TokenizerError, match="not a JSON object"):
        TekkenTokenizer.from_file(bad)


def test_vocab_size_must_match_the_model(tiny_path) -> None:
    with pytest.raises(TokenizerError, match="has 1536 ids .* but the model has 131072"):
        TekkenTokenizer.from_file(tiny_path, vocab_size=131072)


def test_unknown_special_name(ours) -> None:
    with pytest.raises(TokenizerError, match="no special token"):
        ours.special_id("[NOPE]")
    with pytest.raises(TokenizerError, match="not a special id"):
        ours.special_name(1000)


# ------------------------------------------------------------------- a real, full-size Tekken
def test_full_size_tekken_shipped_with_mistral_common_decodes_identically() -> None:
    # mistral-common bundles a real 131072-id Tekken (v3, no special_tokens list): the real byte
    # pieces, real multi-byte splits, and the legacy special-name defaults.
    import mistral_common

    path = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    if not path.is_file():
        pytest.skip("mistral-common no longer bundles tekken_240911.json")
    ours = TekkenTokenizer.from_file(path, vocab_size=131072)
    oracle = Tekkenizer.from_file(path)
    assert ours.special_name(1) == "<s>" and ours.special_name(500) == "<SPECIAL_500>"
    rng = random.Random(11)
    for _ in range(300):
        ids = _random_ids(rng, 131072, rng.randint(0, 40), p_special=0.2)
        expected = _oracle_decode(oracle, ids)
        assert ours.decode(ids) == expected
        decoder = ours.decoder()
        assert "".join(decoder.push(i) for i in ids) + decoder.flush() == expected
    text = "Grüße aus Köln — 日本語のテキスト 🎉 naïve café"
    ids = oracle.encode(text, bos=True, eos=True)
    decoder = ours.decoder()
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) == text and all("\ufffd" not in p for p in pieces)


@pytest.mark.parametrize("vocab_size", [1280, 1536])
def test_small_fixtures_keep_the_split_pieces(tmp_path, vocab_size) -> None:
    tok = TekkenTokenizer.from_file(
        write_tiny_tekken(tmp_path / "tekken.json", vocab_size), vocab_size=vocab_size
    )
    assert set(SPLIT_PIECES) <= {tok.piece(i) for i in range(1000, vocab_size)}
