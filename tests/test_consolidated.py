"""Mistral's original directory (consolidated.safetensors + params.json + tekken.json)."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file

from asr.errors import ConfigError, TokenizerError, WeightsError
from asr.weights.consolidated import is_consolidated_dir, load_consolidated_dir, read_safetensors
from tests.gguf_fixtures import tiny_canonical_weights, tiny_config, write_consolidated_dir


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    config = tiny_config()
    return write_consolidated_dir(tmp_path_factory.mktemp("consolidated") / "model", config,
                                  tiny_canonical_weights(config))


def test_loads_canonical_names_with_neox_qk(tiny_dir):
    checkpoint = load_consolidated_dir(tiny_dir.path)
    assert checkpoint.format == "consolidated" and checkpoint.quant == "bf16"
    assert checkpoint.tokenizer == tiny_dir.path / "tekken.json"
    assert checkpoint.config.encoder.dim == 256 and checkpoint.config.decoder.n_kv_heads == 2
    assert set(checkpoint.tensors) == set(tiny_dir.truth)
    for name, truth in tiny_dir.truth.items():
        assert checkpoint.tensors[name].dtype == torch.bfloat16
        assert torch.equal(checkpoint.tensors[name], truth), name
    checkpoint.validate()
    # independent check of the permutation against the raw file, decoder k (2 kv heads of 64)
    raw = load_file(str(tiny_dir.path / "consolidated.safetensors"))["layers.1.attention.wk.weight"]
    expected = raw.view(2, 32, 2, 256).transpose(1, 2).reshape(128, 256)
    assert torch.equal(checkpoint.tensors["layers.1.attention.wk.weight"], expected)
    assert is_consolidated_dir(tiny_dir.path) and not is_consolidated_dir(tiny_dir.path / "params.json")


def test_views_are_zero_copy(tiny_dir):
    file = tiny_dir.path / "consolidated.safetensors"
    tensors = read_safetensors(file)
    (header_len,) = struct.unpack("<Q", file.read_bytes()[:8])
    header = json.loads(file.read_bytes()[8 : 8 + header_len])
    a, b = "norm.weight", "layers.0.attention.wq.weight"
    # both views point into one mapping, as far apart as their data in the file
    distance = header[b]["data_offsets"][0] - header[a]["data_offsets"][0]
    assert tensors[b].data_ptr() - tensors[a].data_ptr() == distance


def _copy_dir(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_bad_inputs(tmp_path, tiny_dir):
    broken = _copy_dir(tiny_dir.path, tmp_path / "trunc")
    data = (broken / "consolidated.safetensors").read_bytes()
    (broken / "consolidated.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(WeightsError, match=r"consolidated\.safetensors: tensor .* do not fit"):
        load_consolidated_dir(broken)

    header = _copy_dir(tiny_dir.path, tmp_path / "header")
    (header / "consolidated.safetensors").write_bytes(struct.pack("<Q", 2**50) + data[8:])
    with pytest.raises(WeightsError, match="truncated or not a safetensors file"):
        load_consolidated_dir(header)

    no_tok = _copy_dir(tiny_dir.path, tmp_path / "notok")
    (no_tok / "tekken.json").unlink()
    with pytest.raises(TokenizerError, match=r"put tekken\.json .* at .*notok/tekken\.json"):
        load_consolidated_dir(no_tok)

    params = _copy_dir(tiny_dir.path, tmp_path / "params")
    raw = json.loads((params / "params.json").read_text())
    raw["n_layers"] = 3
    (params / "params.json").write_text(json.dumps(raw))
    with pytest.raises(WeightsError, match=r"missing tensor layers\.2\."):
        load_consolidated_dir(params)
    raw["n_layers"] = 1
    (params / "params.json").write_text(json.dumps(raw))
    with pytest.raises(WeightsError, match=r"unexpected tensor layers\.1\."):
        load_consolidated_dir(params)
    del raw["multimodal"]
    (params / "params.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="missing multimodal.whisper_model_args.encoder_args"):
        load_consolidated_dir(params)
    (params / "params.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"params\.json: not readable JSON"):
        load_consolidated_dir(params)


def test_engine_gives_the_same_logits_from_the_mistral_and_hf_directories(tmp_path):
    """Lossless (F32) Mistral layout of the engine's tiny model streams exactly the logits of its HF
    form, so the q/k permutation at load is exactly HF's; a Q8_0 GGUF of it builds and streams."""
    import numpy as np

    from asr.loader import build_model
    from asr.weights.gguf_model import load_gguf
    from asr.weights.hf import load_hf_dir
    from tests.gguf_fixtures import write_all_formats
    from tests.tiny_model import make_tiny_model_dir, synthetic_speechlike

    hf_dir = make_tiny_model_dir(tmp_path / "hf", "wide")
    written = write_all_formats(hf_dir, tmp_path / "out", presets=("Q8_0",))
    audio = synthetic_speechlike(2.0, seed=3).astype(np.float32)
    checkpoints = {"hf": load_hf_dir(hf_dir), "mistral": load_consolidated_dir(written["consolidated"].path),
                   "q8_0": load_gguf(written["gguf-transcribe-cpp-Q8_0"].path)}
    logits: dict[str, list[torch.Tensor]] = {}
    for name, checkpoint in checkpoints.items():
        session = build_model(checkpoint, torch.device("cpu"), torch.float32).stream(480)
        logits[name] = []
        session.logits_hook = lambda step, into=logits[name]: into.append(step[0].float().clone())
        session.feed(audio)
        session.finish()
    assert len(logits["hf"]) > 20
    assert all(torch.equal(a, b) for a, b in zip(logits["mistral"], logits["hf"], strict=True))
    assert len(logits["q8_0"]) == len(logits["hf"])
    assert all(torch.isfinite(step).all() for step in logits["q8_0"])
    assert not all(torch.equal(a, b) for a, b in zip(logits["q8_0"], logits["hf"], strict=True))


def test_fuzzed_safetensors_headers_fail_cleanly(tmp_path, tiny_dir):
    """Random edits of the JSON header end in a WeightsError/ConfigError or a correct load."""
    import numpy as np

    from asr.errors import AsrError

    data = (tiny_dir.path / "consolidated.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    rng = np.random.default_rng(0)
    work = _copy_dir(tiny_dir.path, tmp_path / "fuzz")
    tokens = [b"0", b"9", b"-1", b"1e309", b'"', b"[", b"]", b"{", b"}", b",", b":", b"null", b"\xff",
              b"99999999999999999999", b'"BF16"', b'"I64"']
    loaded = 0
    for _ in range(400):
        header = bytearray(data[8 : 8 + header_len])
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, len(header)))
            header[at : at + int(rng.integers(0, 3))] = tokens[int(rng.integers(0, len(tokens)))]
        (work / "consolidated.safetensors").write_bytes(
            struct.pack("<Q", len(header)) + bytes(header) + data[8 + header_len :])
        try:
            load_consolidated_dir(work).validate()
            loaded += 1
        except AsrError:
            pass
    assert loaded < 400
