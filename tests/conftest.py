"""Shared fixtures: tiny random models (transformers format) and their reference twins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU, the Triton kernels are tested through Triton's interpreter (asr/kernels). It must
# be chosen before anything imports Triton; it changes nothing unless a test enters kernels.on_cpu().
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:  # one tile per GEMV shape instead of tuning all: every tile is tested directly (test_kernels)
    os.environ.setdefault("VOXCAP_AUTOTUNE", "0")

from tests.pulse import portaudio_pulse, pulse_server_fixture, speech_wav  # noqa: F401 (shared fixtures)
from tests.tiny_model import build_hf_model, make_tiny_model_dir

# Tiny models run far faster on one thread: two threads on two cores shared with the test runner
# and PortAudio/Textual threads spend most of their time waiting for each other (33x here).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small shaped random model directory (config.json + model.safetensors + tekken.json)."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "voxtral-tiny", "small")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """preset -> (model directory, transformers model with the same weights); built on first use."""
    cache: dict[str, tuple[Path, object]] = {}

    def get(preset: str) -> tuple[Path, object]:
        if preset not in cache:
            path = make_tiny_model_dir(tmp_path_factory.mktemp(f"tiny-{preset}") / preset, preset)
            cache[preset] = (path, build_hf_model(preset))
        return cache[preset]

    return get
