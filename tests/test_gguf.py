"""GGUF loading, both families: canonical names, NeoX q/k layout, exact values, clean errors."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T

from asr.errors import AsrError, ConfigError, TokenizerError, UnsupportedFormat, WeightsError
from asr.quant import QuantizedTensor
from asr.weights.gguf_common import EmbeddedVocab
from asr.weights.gguf_model import load_gguf
from asr.weights.gguf_reader import GGUFFile, is_gguf
from asr.weights.names import expected_shapes
from tests.gguf_fixtures import (
    tiny_canonical_weights,
    tiny_config,
    write_transcribe_cpp_gguf,
    write_trevors_gguf,
)


def _dense(t: torch.Tensor | QuantizedTensor) -> torch.Tensor:
    return t.dequantize() if isinstance(t, QuantizedTensor) else t.float()


def _assert_same_values(checkpoint, written):
    assert set(checkpoint.tensors) == set(written.truth)
    for name, truth in written.truth.items():
        got = _dense(checkpoint.tensors[name])
        assert got.shape == truth.shape, name
        assert torch.equal(got.contiguous().view(torch.int32), truth.contiguous().view(torch.int32)), name


@pytest.fixture(scope="module")
def tiny():
    config = tiny_config()
    return config, tiny_canonical_weights(config)


@pytest.mark.parametrize("preset", ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "BF16", "F16"])
def test_transcribe_cpp_gguf_loads_exact_canonical_tensors(tmp_path, tiny, preset):
    config, weights = tiny
    written = write_transcribe_cpp_gguf(tmp_path / f"tiny-{preset}.gguf", config, weights, preset)
    checkpoint = load_gguf(written.path)
    assert checkpoint.format == "gguf-transcribe-cpp"
    assert checkpoint.config.decoder.vocab_size == 1200 and checkpoint.config.encoder.n_layers == 2
    assert checkpoint.config.decoder.n_kv_heads == 2 and checkpoint.config.encoder.rope_theta == 1e6
    _assert_same_values(checkpoint, written)
    checkpoint.validate()
    # q/k are stored NeoX already, so nothing was permuted: the file's bytes come through unchanged
    wq = checkpoint.tensors["layers.0.attention.wq.weight"]
    assert written.types["layers.0.attention.wq.weight"] in (T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_0, T.BF16, T.F16)
    if isinstance(wq, QuantizedTensor):
        assert wq.qtype.name == written.types["layers.0.attention.wq.weight"].name
    vocab = checkpoint.tokenizer
    assert isinstance(vocab, EmbeddedVocab)
    assert len(vocab.tokens) == 1200 and vocab.tokens[32] == "[STREAMING_PAD]"
    assert vocab.token_types[1000] == 1
    assert (vocab.bos_id, vocab.eos_id, vocab.pad_id, vocab.streaming_pad_id) == (1, 2, 11, 32)


def test_q4_k_m_policy_keeps_quantized_types(tmp_path, tiny):
    config, weights = tiny
    written = write_transcribe_cpp_gguf(tmp_path / "q4km.gguf", config, weights, "Q4_K_M")
    checkpoint = load_gguf(written.path)
    kinds = {name: (t.qtype.name if isinstance(t, QuantizedTensor) else str(t.dtype))
             for name, t in checkpoint.tensors.items()}
    assert kinds["tok_embeddings.weight"] == "Q6_K"
    assert kinds["layers.1.attention.wo.weight"] == "Q8_0"
    assert kinds["layers.1.ada_rms_norm_t_cond.2.weight"] == "Q8_0"
    assert kinds["layers.1.feed_forward.w2.weight"] == "Q4_K"
    assert kinds["whisper_encoder.conv_layers.0.conv.weight"] == "torch.float32"
    packed = checkpoint.tensors["layers.0.feed_forward.w1.weight"]
    assert packed.nbytes == 512 * 256 // 256 * 144
    reader = GGUFFile(written.path)
    other = checkpoint.tensors["layers.0.feed_forward.w3.weight"]
    offsets = {n: i.offset for n, i in reader.tensors.items()}
    distance = offsets["dec.blocks.0.ffn.up.weight"] - offsets["dec.blocks.0.ffn.gate.weight"]
    assert other.data.data_ptr() - packed.data.data_ptr() == distance  # views of one mapping, no copies


@pytest.mark.parametrize("prefixed", [True, False])
def test_trevors_gguf_permutes_qk_to_neox(tmp_path, tiny, prefixed):
    config, weights = tiny
    written = write_trevors_gguf(tmp_path / "voxtral-q4.gguf", config, weights, prefixed=prefixed)
    checkpoint = load_gguf(written.path)
    assert checkpoint.format == "gguf-trevors" and checkpoint.quant == "q4_0"
    assert checkpoint.tokenizer == tmp_path / "tekken.json"
    _assert_same_values(checkpoint, written)
    # permutation is a row reordering of the raw file bytes
    raw = GGUFFile(written.path)
    file_name = ("mm_streams_embeddings.embedding_module." if prefixed else "") + \
        "whisper_encoder.transformer.layers.1.attention.wq.bias"
    stored = raw.tensor(file_name)
    got = checkpoint.tensors["whisper_encoder.transformer.layers.1.attention.wq.bias"]
    heads, head_dim = 4, 64
    assert torch.equal(got, stored.view(heads, head_dim // 2, 2).transpose(1, 2).reshape(-1))


def test_trevors_without_params_uses_published_config_and_says_so(tmp_path, tiny):
    config, weights = tiny
    written = write_trevors_gguf(tmp_path / "voxtral-q4.gguf", config, weights, params_json=False)
    with pytest.raises(WeightsError, match=r"published hyper-parameters were assumed; put this model's "
                                           r"params\.json at .*params\.json"):
        load_gguf(written.path)


def test_trevors_missing_tokenizer_names_what_to_put_where(tmp_path, tiny):
    config, weights = tiny
    written = write_trevors_gguf(tmp_path / "voxtral-q4.gguf", config, weights, tekken=False)
    with pytest.raises(TokenizerError, match=r"put tekken\.json .* at .*tekken\.json"):
        load_gguf(written.path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "tekken.json").write_text("{}")
    loaded = load_gguf(written.path, tokenizer=tmp_path / "other" / "tekken.json")
    assert loaded.tokenizer.parent.name == "other"


def test_wrong_architecture(tmp_path, tiny):
    config, weights = tiny
    written = write_trevors_gguf(tmp_path / "x.gguf", config, weights, architecture="llama")
    with pytest.raises(WeightsError, match=r"general\.architecture 'llama'"):
        load_gguf(written.path)


def test_transcribe_cpp_names_with_wrong_arch(tmp_path, tiny):
    config, weights = tiny

    def edit(writer):
        writer.kv_data[0]["general.architecture"].value = "whisper"

    path = tmp_path / "x.gguf"
    write_transcribe_cpp_gguf(path, config, weights, "Q8_0", edit_metadata=edit)
    with pytest.raises(WeightsError, match=r"general\.architecture 'whisper'"):
        load_gguf(path)


def test_missing_metadata_and_vocab_mismatch(tmp_path, tiny):
    config, weights = tiny

    def drop_heads(writer):
        del writer.kv_data[0]["stt.voxtral_realtime.decoder.n_heads"]

    path = tmp_path / "a.gguf"
    write_transcribe_cpp_gguf(path, config, weights, "Q8_0", edit_metadata=drop_heads)
    with pytest.raises(ConfigError, match=r"lacks metadata key stt\.voxtral_realtime\.decoder\.n_heads"):
        load_gguf(path)

    def short_vocab(writer):
        writer.kv_data[0]["tokenizer.ggml.tokens"].value = ["a"] * 1100
        writer.kv_data[0]["tokenizer.ggml.token_type"].value = [1] * 1100

    path = tmp_path / "b.gguf"
    write_transcribe_cpp_gguf(path, config, weights, "Q8_0", edit_metadata=short_vocab)
    with pytest.raises(TokenizerError, match=r"tokenizer\.ggml\.tokens has 1100 entries .* vocabulary "
                                              "is 1200"):
        load_gguf(path)


def test_missing_extra_and_misshapen_tensors(tmp_path, tiny):
    config, weights = tiny
    fewer = {k: v for k, v in weights.items() if k != "layers.1.feed_forward.w3.weight"}
    path = tmp_path / "missing.gguf"
    write_transcribe_cpp_gguf(path, config, fewer, "Q8_0")
    with pytest.raises(WeightsError, match=r"missing tensor dec\.blocks\.1\.ffn\.up\.weight"):
        load_gguf(path)

    more = dict(weights)
    more["layers.2.attention_norm.weight"] = torch.ones(256)
    path = tmp_path / "extra.gguf"
    write_transcribe_cpp_gguf(path, config, more, "Q8_0")
    with pytest.raises(WeightsError, match=r"unexpected tensor dec\.blocks\.2\.norm_attn\.weight"):
        load_gguf(path)

    bent = dict(weights)
    bent["layers.0.attention.wk.weight"] = torch.zeros(256, 256)
    path = tmp_path / "shape.gguf"
    write_transcribe_cpp_gguf(path, config, bent, "Q8_0")
    with pytest.raises(WeightsError, match=r"tensor dec\.blocks\.0\.attn\.k\.weight has shape \[256, 256\] .*"
                                           r"\[128, 256\]"):
        load_gguf(path)


def test_mixed_name_families_cannot_determine_layout(tmp_path, tiny):
    config, weights = tiny
    path = tmp_path / "mixed.gguf"
    mixed = dict(weights)
    written = write_transcribe_cpp_gguf(path, config, mixed, "Q8_0")
    data = bytearray(written.path.read_bytes())
    # rename one transcribe.cpp tensor to an original name of the same length
    old, new = b"dec.output_norm.weight", b"layers.0.ffn_norm.xxxx"
    assert len(old) == len(new) and data.count(old) == 1
    data[data.index(old) : data.index(old) + len(old)] = new
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="cannot determine the q/k RoPE layout"):
        load_gguf(path)


# -- the reader on bad input ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory, tiny):
    config, weights = tiny
    path = tmp_path_factory.mktemp("small") / "small.gguf"
    write_transcribe_cpp_gguf(path, config, weights, "Q4_K_M")
    return path


def test_truncated_files(tmp_path, small_gguf):
    data = small_gguf.read_bytes()
    reader = GGUFFile(small_gguf)
    for cut in (0, 3, 23, 100, reader.data_offset - 1, reader.data_offset + 10, len(data) - 1):
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(data[:cut])
        with pytest.raises(WeightsError, match=str(path).replace(".", r"\.")):
            load_gguf(path)
    with pytest.raises(WeightsError, match=r"past the end of the file"):
        path = tmp_path / "cut_tail.gguf"
        path.write_bytes(data[:-1])
        GGUFFile(path)


def test_magic_version_and_counts(tmp_path, small_gguf):
    data = bytearray(small_gguf.read_bytes())

    def variant(name, offset, raw):
        copy = bytearray(data)
        copy[offset : offset + len(raw)] = raw
        path = tmp_path / name
        path.write_bytes(bytes(copy))
        return path

    with pytest.raises(UnsupportedFormat, match="not a GGUF file"):
        GGUFFile(variant("magic.gguf", 0, b"GGML"))
    with pytest.raises(UnsupportedFormat, match="version 1"):
        GGUFFile(variant("v1.gguf", 4, struct.pack("<I", 1)))
    with pytest.raises(UnsupportedFormat, match="version 50331648 .big-endian"):
        GGUFFile(variant("be.gguf", 4, struct.pack(">I", 3)))
    with pytest.raises(WeightsError, match="claims 18446744073709551615 tensors"):
        GGUFFile(variant("tensors.gguf", 8, struct.pack("<Q", 2**64 - 1)))
    with pytest.raises(WeightsError, match="claims 1000000000 metadata entries"):
        GGUFFile(variant("kv.gguf", 16, struct.pack("<Q", 10**9)))
    assert is_gguf(small_gguf) and not is_gguf(tmp_path / "nope.gguf")
    with pytest.raises(WeightsError, match="cannot read GGUF file"):
        GGUFFile(tmp_path)


def test_tensor_offset_outside_file_and_unknown_type(tmp_path, small_gguf):
    reader = GGUFFile(small_gguf)
    data = bytearray(small_gguf.read_bytes())
    name = b"dec.blocks.0.attn.q.weight"
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)  # after the name
    n_dims = struct.unpack_from("<I", data, at)[0]
    type_at = at + 4 + 8 * n_dims
    copy = bytearray(data)
    copy[type_at + 4 : type_at + 12] = struct.pack("<Q", 1 << 40)
    (tmp_path / "off.gguf").write_bytes(bytes(copy))
    with pytest.raises(WeightsError, match=r"tensor dec\.blocks\.0\.attn\.q\.weight .* past the end"):
        GGUFFile(tmp_path / "off.gguf")
    copy = bytearray(data)
    copy[type_at : type_at + 4] = struct.pack("<I", T.Q2_K.value)
    (tmp_path / "q2k.gguf").write_bytes(bytes(copy))
    with pytest.raises(UnsupportedFormat, match=r"unsupported quant type Q2_K in tensor "
                                                 r"dec\.blocks\.0\.attn\.q"
                                                r"\.weight \(file .*q2k\.gguf\)"):
        load_gguf(tmp_path / "q2k.gguf")
    copy = bytearray(data)
    copy[type_at : type_at + 4] = struct.pack("<I", 77)
    (tmp_path / "t77.gguf").write_bytes(bytes(copy))
    with pytest.raises(UnsupportedFormat, match=r"type id 77 in tensor dec\.blocks\.0\.attn\.q\.weight"):
        load_gguf(tmp_path / "t77.gguf")
    assert reader.type_name("dec.blocks.0.attn.q.weight") == "Q4_K"


def test_huge_string_and_array_lengths_fail_fast(tmp_path, small_gguf):
    data = bytearray(small_gguf.read_bytes())
    key = b"tokenizer.ggml.tokens"
    at = data.index(key) + len(key)  # value type u32, elem type u32, count u64
    copy = bytearray(data)
    copy[at + 8 : at + 16] = struct.pack("<Q", 2**62)
    (tmp_path / "arr.gguf").write_bytes(bytes(copy))
    with pytest.raises(WeightsError, match=r"metadata array tokenizer\.ggml\.tokens claims "
                                            "4611686018427387904"):
        GGUFFile(tmp_path / "arr.gguf")
    copy = bytearray(data)
    copy[at + 16 : at + 24] = struct.pack("<Q", 2**60)  # length of the first token string
    (tmp_path / "str.gguf").write_bytes(bytes(copy))
    with pytest.raises(WeightsError, match=r"tokenizer\.ggml\.tokens\[0\] needs 1152921504606846976 bytes"):
        GGUFFile(tmp_path / "str.gguf")


def test_loaded_tensors_view_the_file_without_copies(small_gguf):
    reader = GGUFFile(small_gguf)
    tensor = reader.tensor("dec.blocks.0.ffn.gate.weight")
    assert isinstance(tensor, QuantizedTensor)
    info = reader.tensors["dec.blocks.0.ffn.gate.weight"]
    raw = np.fromfile(small_gguf, dtype=np.uint8, count=info.nbytes, offset=info.offset)
    assert torch.equal(tensor.data.reshape(-1), torch.from_numpy(raw))
    norm = reader.tensor("dec.blocks.0.norm_attn.weight")
    assert norm.dtype == torch.float32 and norm.shape == (256,)


def test_config_matches_transformers_config_class(tmp_path, tiny):
    """The HF-shaped dicts the loaders build are accepted by transformers' own config class."""
    from transformers import VoxtralRealtimeConfig

    from asr.weights.gguf_model import transcribe_cpp_config

    config, weights = tiny
    written = write_transcribe_cpp_gguf(tmp_path / "c.gguf", config, weights, "Q8_0")
    as_dict = transcribe_cpp_config(GGUFFile(written.path))
    hf = VoxtralRealtimeConfig(**json.loads(json.dumps(as_dict)))
    assert hf.text_config.num_key_value_heads == 2 and hf.audio_config.head_dim == 64
    assert expected_shapes(load_gguf(written.path).config)["tok_embeddings.weight"] == (1200, 256)


def test_errors_are_asr_errors():
    assert issubclass(UnsupportedFormat, AsrError) and issubclass(TokenizerError, AsrError)


def test_every_format_of_the_engine_tiny_model_loads_exactly(tmp_path):
    """The engine's tiny HF model (tests/tiny_model.py), rewritten in every other format, loads
    back to the exact (dequantized) weights under the same canonical names as the HF loader."""
    from asr.weights.consolidated import load_consolidated_dir
    from asr.weights.hf import load_hf_dir
    from tests.gguf_fixtures import write_all_formats
    from tests.tiny_model import make_tiny_model_dir

    hf_dir = make_tiny_model_dir(tmp_path / "hf", "wide")
    reference = load_hf_dir(hf_dir)
    written = write_all_formats(hf_dir, tmp_path / "out")
    for fmt, model in written.items():
        checkpoint = load_consolidated_dir(model.path) if fmt == "consolidated" else load_gguf(model.path)
        checkpoint.validate()
        assert checkpoint.config == reference.config, fmt
        _assert_same_values(checkpoint, model)
    mistral = load_consolidated_dir(written["consolidated"].path)  # F32: lossless, so equal to HF
    for name, tensor in reference.tensors.items():
        assert torch.equal(mistral.tensors[name], tensor.float()), name


def test_reader_agrees_with_gguf_py(small_gguf):
    """Our strict parser and gguf-py's GGUFReader see the same metadata, tensor infos and bytes."""
    from gguf import GGUFReader

    ours = GGUFFile(small_gguf)
    theirs = GGUFReader(str(small_gguf))
    assert ours.data_offset == theirs.data_offset and ours.alignment == theirs.alignment
    for field in theirs.fields.values():
        if field.name.startswith("GGUF."):
            continue  # gguf-py's pseudo-fields for the header
        value = field.contents()
        mine = ours.metadata[field.name]
        if isinstance(mine, np.ndarray):
            assert mine.tolist() == value, field.name
        elif isinstance(value, float):
            assert np.float32(mine) == np.float32(value), field.name
        else:
            assert mine == value, field.name
    assert len(theirs.tensors) == len(ours.tensors)
    for tensor in theirs.tensors:
        info = ours.tensors[tensor.name]
        assert info.ggml_type == tensor.tensor_type.value
        assert info.shape == tuple(int(n) for n in reversed(tensor.shape.tolist()))
        assert info.offset == tensor.data_offset and info.nbytes == tensor.n_bytes
        view = ours.tensor(tensor.name)
        raw = view.data if isinstance(view, QuantizedTensor) else view.reshape(-1).view(torch.uint8)
        assert np.array_equal(raw.reshape(-1).numpy(), np.asarray(tensor.data).reshape(-1).view(np.uint8))


def test_tensors_outlive_the_reader(small_gguf):
    """Views keep the mapping alive after the GGUFFile object is gone (no use-after-unmap)."""
    import gc

    packed = GGUFFile(small_gguf).tensor("dec.blocks.0.ffn.gate.weight")
    norm = GGUFFile(small_gguf).tensor("dec.blocks.0.norm_attn.weight")
    gc.collect()
    assert torch.isfinite(packed.dequantize()).all() and torch.isfinite(norm).all()
