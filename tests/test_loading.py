"""Loading the transformers directory format: both key-name generations, and every bad-input case."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import asr
from asr.config import DecoderConfig, EncoderConfig, ModelConfig
from asr.model import count_parameters
from asr.weights.names import normalize_hf_name
from tests.tiny_model import synthetic_speechlike


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def transcribe_ids(path):
    model = asr.load_model(path, device="cpu", dtype=torch.float32)
    session = model.stream(480)
    return [t.id for t in session.feed(synthetic_speechlike(4.0, seed=2)) + session.finish()]


def rewrite_tensors(path, edit):
    file = path / "model.safetensors"
    tensors = load_file(file)
    save_file(edit(dict(tensors)), file)


@pytest.mark.parametrize("style", ["old", "new"])
def test_both_key_name_generations_load(tiny_model_dir, tmp_path, style):
    def rename(tensors):
        out = {}
        for name, tensor in tensors.items():
            plain = normalize_hf_name(name)  # audio_tower.*, language_model.*, multi_modal_projector.*
            if style == "old":  # transformers 5.2-5.9
                plain = plain.replace("language_model.", "language_model.model.", 1)
            else:  # 5.10+
                plain = "model." + plain
            out[plain] = tensor.contiguous()
        return out

    path = copy_model(tiny_model_dir, tmp_path / "m")
    rewrite_tensors(path, rename)
    assert transcribe_ids(path) == transcribe_ids(tiny_model_dir)


def test_dtype_and_device_strings(tiny_model_dir):
    model = asr.load_model(str(tiny_model_dir), device="cpu", dtype="bf16")
    assert model.dtype == torch.bfloat16 and model.info.dtype == "bfloat16"
    session = model.stream(480)
    tokens = session.feed(synthetic_speechlike(3.0, seed=1)) + session.finish()
    assert len(tokens) == 32 + 38 + 17 - 38
    with pytest.raises(asr.ConfigError, match="dtype"):
        asr.load_model(tiny_model_dir, device="cpu", dtype="int8")
    with pytest.raises(asr.ConfigError, match="device"):
        asr.load_model(tiny_model_dir, device="tpu")


def _drop(name_part):
    return lambda t: {k: v for k, v in t.items() if name_part not in k}


def _reshape(name_part):
    def edit(t):
        key = next(k for k in t if name_part in k)
        t[key] = torch.zeros(t[key].shape[0] + 1, *t[key].shape[1:])
        return t

    return edit


@pytest.mark.parametrize(
    ("breakage", "error", "match"),
    [
        (lambda p: (p / "config.json").unlink(), asr.UnsupportedFormat, "not a known Voxtral"),
        (lambda p: (p / "config.json").write_text("{not json"), asr.ConfigError, "config.json"),
        (
            lambda p: (p / "config.json").write_text(json.dumps({"model_type": "whisper"})),
            asr.ConfigError,
            "whisper",
        ),
        (lambda p: (p / "tekken.json").unlink(), asr.TokenizerError, "tekken.json"),
        (lambda p: (p / "model.safetensors").unlink(), asr.WeightsError, "safetensors"),
        (lambda p: (p / "model.safetensors").write_bytes(b"\x00" * 64), asr.WeightsError, "safetensors"),
        (lambda p: rewrite_tensors(p, _drop("layers.1.mlp.up_proj")), asr.WeightsError, "missing"),
        (lambda p: rewrite_tensors(p, _reshape("multi_modal_projector.linear_2")), asr.WeightsError, "shape"),
        (
            lambda p: rewrite_tensors(p, lambda t: {**t, "extra.weight": torch.zeros(2)}),
            asr.WeightsError,
            "extra",
        ),
    ],
)
def test_broken_model_directories_give_specific_errors(tiny_model_dir, tmp_path, breakage, error, match):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    breakage(path)
    with pytest.raises(error, match=match):
        asr.load_model(path, device="cpu", dtype=torch.float32)


def test_vocab_size_mismatch_with_tokenizer(tiny_model_dir, tmp_path):
    from tests.tekken_fixture import write_tiny_tekken

    path = copy_model(tiny_model_dir, tmp_path / "m")
    write_tiny_tekken(path / "tekken.json", vocab_size=1280)
    with pytest.raises(asr.TokenizerError):
        asr.load_model(path, device="cpu", dtype=torch.float32)


def test_missing_model_path():
    with pytest.raises(asr.ModelNotFound, match="no model"):
        asr.load_model("/nonexistent/voxtral", device="cpu")


def test_full_size_parameter_count_matches_published():
    cfg = ModelConfig(EncoderConfig(), DecoderConfig())
    assert count_parameters(cfg) == 4_429_679_360


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_transcribe_cli_text_and_jsonl(tiny_model_dir, tmp_path):
    import soundfile as sf

    wav = tmp_path / "speech.wav"
    audio = synthetic_speechlike(5.0, seed=4, sample_rate=22050)
    sf.write(wav, np.stack([audio, audio], axis=1), 22050)  # stereo, 22.05 kHz
    text = run_cli("transcribe", str(wav), "--model", str(tiny_model_dir), "--dtype", "float32")
    assert text.returncode == 0, text.stderr
    jsonl = run_cli(
        "transcribe", str(wav), "--model", str(tiny_model_dir), "--dtype", "float32", "--format", "jsonl"
    )
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    tokens = [r for r in records if r["type"] == "token"]
    assert len(tokens) == 32 + 63 + 17 - 38  # every position from 38 to N - 1
    assert all(0 <= r["start_s"] <= r["end_s"] <= 5.0 for r in tokens)
    joined = "".join(r["text"] for r in tokens)
    assert joined.strip(), "the tiny model emitted no text at all"
    # Same transcript either way (the text form strips each line's surrounding spaces).
    assert "".join(text.stdout.split()) == "".join(joined.split())


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["transcribe", "/nonexistent.wav"], "no such file"),
        (["transcribe", "{wav}", "--delay-ms", "500"], "delay 500 ms"),
        (["transcribe", "{wav}", "--model", "/nonexistent/model"], "no model"),
        (["transcribe", "{notaudio}"], "not a readable audio file"),
    ],
)
def test_transcribe_cli_errors_are_one_line(tmp_path, tiny_model_dir, args, match):
    import soundfile as sf

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    notaudio = tmp_path / "a.txt"
    notaudio.write_text("hello")
    args = [a.format(wav=wav, notaudio=notaudio) for a in args]
    if "--model" not in args:
        args += ["--model", str(tiny_model_dir)]
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert match in result.stderr and result.stderr.count("\n") == 1


def test_dequantize_expands_packed_weights_with_the_same_stream(tiny_model_dir, tmp_path):
    from asr.quant import QLinear
    from tests.gguf_fixtures import write_all_formats

    written = write_all_formats(tiny_model_dir, tmp_path, presets=("Q8_0",))["gguf-transcribe-cpp-Q8_0"]
    packed = asr.load_model(written.path, device="cpu", dtype=torch.float32)
    dense = asr.load_model(written.path, device="cpu", dtype=torch.float32, dequantize=True)
    assert any(isinstance(m, QLinear) for m in packed.net.modules())
    assert not any(isinstance(m, QLinear) for m in dense.net.modules())
    assert dense.info.weight_bytes > 2 * packed.info.weight_bytes  # float32 vs 8.5 bits (norms are f32 in both)
    assert dense.info.n_params == packed.info.n_params

    def ids(model):
        session = model.stream(480)
        return [t.id for t in session.feed(synthetic_speechlike(4.0, seed=6)) + session.finish()]

    assert ids(dense) == ids(packed)
