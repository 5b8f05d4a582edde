"""The L2 prefetch plan (asr/prefetch.py): which products a forward runs, in which order, and which
of their tensors a prefetch reads. The prefetch kernels themselves run only in CUDA graphs
(tests/test_cuda.py: captured, and changing no bit)."""

from __future__ import annotations

import pytest
import torch

from asr import prefetch
from asr.config import DecoderConfig, EncoderConfig, ModelConfig
from asr.encoder import ConvState
from asr.loader import load_random_model
from asr.quant.fast import Int4Linear, Int8Linear
from tests.test_fast_linear import _weight as quantized_weight

CONFIG = ModelConfig(
    encoder=EncoderConfig(dim=256, n_layers=2, n_heads=4, head_dim=64, hidden_dim=512, sliding_window=750),
    decoder=DecoderConfig(dim=256, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=64, hidden_dim=512, vocab_size=1280),
)


@pytest.fixture(scope="module")
def q4_k_m():
    return load_random_model("q4_k_m", "cpu", torch.bfloat16, config=CONFIG)


def expected_products(net) -> list[torch.nn.Module]:
    """The products one encoder token runs, in order, read off the module tree."""
    order = []
    for layer in net.whisper_encoder.transformer.layers:
        attn, ffn = layer.attention, layer.feed_forward
        order += [attn.wqkv] if attn.wqkv is not None else [attn.wq, attn.wk, attn.wv]
        order += [attn.wo]
        order += [ffn.w13] if ffn.w13 is not None else [ffn.w1, ffn.w3]
        order += [ffn.w2]
    return order + [net.audio_language_projection[0], net.audio_language_projection[2]]


def test_recording_notes_every_product_in_the_order_it_runs(q4_k_m):
    from asr.graphs import encode_tokens

    net = q4_k_m.net
    conv = ConvState(1, CONFIG.encoder.n_mels, CONFIG.encoder.dim, torch.bfloat16, torch.device("cpu"))
    cache = net.whisper_encoder.new_cache(1, torch.bfloat16, torch.device("cpu"))
    mel = torch.randn(1, CONFIG.encoder.n_mels, 8)
    with torch.inference_mode(), prefetch.recording() as order:
        encode_tokens(net, mel, conv, cache, torch.arange(4))
    expected = expected_products(net)
    assert len(order) == len(expected) >= 4 * CONFIG.encoder.n_layers + 2
    assert all(a is b for a, b in zip(order, expected, strict=True))
    assert {type(m) for m in order} >= {Int4Linear}
    # Outside a recording nothing is noted (and nothing is held on to).
    encode_tokens(net, mel, conv, cache, torch.arange(4, 8))
    assert len(order) == len(expected)


def test_prefetched_tensors_are_what_a_product_reads(monkeypatch):
    q4k, _ = quantized_weight("Q4_K", 64, 256)
    q6k, _ = quantized_weight("Q6_K", 64, 256)
    q5_1, _ = quantized_weight("Q5_1", 64, 256)
    int4 = Int4Linear(q4k, torch.zeros(64), keep_rows=True)  # a tied embedding keeps its rows
    int8 = Int8Linear(q6k, torch.zeros(64), torch.bfloat16)
    offsets = Int8Linear(q5_1, None, torch.bfloat16)
    # Off CUDA nothing is prefetched: every tensor here is on the CPU.
    assert prefetch.weights_of(int4) == []
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))

    def picked(layer):
        return [t.data_ptr() for t in prefetch.weights_of(layer)]

    # Not the bias, nor the rows kept for lookups: products never read those.
    assert picked(int4) == [int4.weight.data_ptr(), int4.scales_zeros.data_ptr()]
    assert picked(int8) == [int8.codes.data_ptr(), int8.scale.data_ptr(), int8.block_scale.data_ptr()]
    assert picked(offsets) == [offsets.codes.data_ptr(), offsets.scale.data_ptr(), offsets.offset.data_ptr()]
    # Too large to sit in L2 beside the product before it: not prefetched at all.
    monkeypatch.setattr(prefetch.settings, "max_bytes", int4.weight.numel() * int4.weight.element_size())
    assert prefetch.weights_of(int4) == []


def test_issuing_is_a_no_op_where_prefetch_cannot_run(monkeypatch):
    monkeypatch.setattr(prefetch.settings, "mode", "0")
    assert not prefetch.enabled()
    with prefetch.issuing([torch.nn.Linear(2, 2)], side=None) as plan:
        prefetch.before_product(torch.nn.Linear(2, 2))
    assert plan.launched == 0
