"""The Triton kernels (asr/kernels) against the PyTorch reference path.

On a machine without CUDA they run through Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before Triton is imported); on CUDA they run for real. Oracles: the
reference ops themselves (RMSNorm, RoPE, SwiGLU: bit for bit in bf16 and fp16), float32 SDPA over
the same ring with the same mask (attention), a float32 matmul of the exact weight values (GEMV),
and, end to end, the same tiny model streamed with the kernels off.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from asr import kernels
from asr.layers import RMSNorm, Rotary, apply_rope

pytestmark = pytest.mark.skipif(not kernels.triton_available(), reason="needs Triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def kernels_on():
    with kernels.on_cpu() if DEVICE == "cpu" else contextlib.nullcontext():
        yield


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dim", [64, 96, 3072])
def test_rmsnorm_and_ada_scale_are_bit_exact(dtype, dim):
    from asr.kernels.norm import rmsnorm

    gen = torch.Generator().manual_seed(dim)
    x = (torch.randn(5, dim, generator=gen) * 3).to(DEVICE, dtype)
    norm = RMSNorm(dim, 1e-5).to(DEVICE)
    norm.weight.data = torch.randn(dim, generator=gen).to(DEVICE, dtype)
    scale = (1 + torch.randn(dim, generator=gen) * 0.1).to(DEVICE, dtype)
    delta = torch.randn(5, dim, generator=gen).to(DEVICE, dtype)
    bias = torch.randn(dim, generator=gen).to(DEVICE, dtype)
    with kernels.disabled():
        want, want_scaled = norm(x), norm(x, scale)
        want_h, want_added = norm.add(x, delta, scale, bias)
    assert torch.equal(rmsnorm(x, norm.weight, 1e-5), want)
    assert torch.equal(rmsnorm(x, norm.weight, 1e-5, scale), want_scaled)
    h, added = norm.add(x, delta, scale, bias)  # the fused residual add (+ bias) and norm
    assert torch.equal(h, want_h) and torch.equal(added, want_added)
    assert torch.equal(h, x + (delta + bias))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_silu_mul_matches_to_the_last_bit_of_exp(dtype):
    """Same roundings as F.silu(gate) * up; exp itself may differ in its last fp32 bit between
    libraries, which moves silu by one unit of the model dtype in rare cases."""
    from asr.kernels.norm import silu_mul

    gate_up = (torch.randn(3, 7, 2 * 1300, generator=torch.Generator().manual_seed(0)) * 4).to(DEVICE, dtype)
    gate, up = gate_up.chunk(2, dim=-1)
    got, want = silu_mul(gate_up), F.silu(gate) * up
    # One unit in silu's last place, carried through the product: at most 2 eps relative.
    bound = 2 * torch.finfo(dtype).eps * want.float().abs().clamp_min(torch.finfo(dtype).tiny)
    assert ((got.float() - want.float()).abs() <= bound).all()
    assert (got != want).float().mean() < 1e-3


def _ring(n_kv: int, slots: int, dim: int, filled_to: int, dtype: torch.dtype, seed: int):
    """A ring of ``slots`` whose slots hold positions up to ``filled_to`` - 1 (wrapped), random keys."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(1, n_kv, slots, dim, generator=gen).to(DEVICE, dtype)
    v = torch.randn(1, n_kv, slots, dim, generator=gen).to(DEVICE, dtype)
    slot_pos = torch.full((slots,), -1, dtype=torch.long)
    for p in range(max(0, filled_to - slots), filled_to):
        slot_pos[p % slots] = p
    return k, v, slot_pos.to(DEVICE)


BF16, F32 = torch.bfloat16, torch.float32
CASES = [  # heads, kv heads, head dim, window, slack, new positions T, first new position, bias, dtype
    (4, 2, 16, 23, 64, 1, 0, False, BF16),  # the very first step
    (4, 2, 16, 23, 64, 1, 500, False, BF16),  # wrapped many times
    (4, 2, 16, 23, 64, 39, 0, True, BF16),  # a prompt prefill: 78 query rows, 5 blocks of them
    (6, 2, 64, 300, 64, 1, 290, False, BF16),  # GQA 3:1, several splits, not yet wrapped
    (4, 4, 64, 13, 256, 8, 40, True, BF16),  # the encoder: no GQA, a chunk of 2 tokens, wrapped
    (4, 4, 64, 300, 256, 8, 252, True, BF16),  # new slots 252..259 straddle two splits
    # 39 new positions whose slots run past the ring's end (344..363, then 0..18), over two
    # splits, written by each of 10 row blocks of each split.
    (8, 2, 64, 300, 64, 39, 708, True, BF16),
    (4, 2, 64, 300, 64, 1, 420, True, BF16),  # one position with a bias
    (4, 2, 64, 300, 64, 8, 700, True, F32),  # float32: exact products, float32 ring
    (32, 8, 128, 2048, 64, 1, 1000, False, BF16),  # the real decoder's heads, part-filled
]


def _attention_case(H, HKV, D, W, slack, T, p0, with_bias, dtype) -> tuple[dict, tuple, torch.Tensor]:
    """Inputs for ``attention`` (its arguments, the ring not yet written), the ring it must leave
    (k, v), and the float32 SDPA output over that ring [1, T, H, D]."""
    slots = W + slack
    k_ring, v_ring, slot_pos = _ring(HKV, slots, D, p0, dtype, seed=p0 + T)
    positions = torch.arange(p0, p0 + T, device=DEVICE)
    slot_pos[positions % slots] = positions  # write-first, as RingKVCache.begin does
    gen = torch.Generator().manual_seed(1)
    qkv = torch.randn(1, T, (H + 2 * HKV) * D, generator=gen).to(DEVICE, dtype)
    bias = torch.randn((H + 2 * HKV) * D, generator=gen).to(DEVICE, dtype) if with_bias else None
    cos, sin = Rotary(D, 1e6).cos_sin(positions, dtype)
    # Reference: add the bias, split, rotate with the PyTorch ops, index_copy into a copy of the ring.
    q_ref, k_new, v_new = (qkv if bias is None else qkv + bias).split([H * D, HKV * D, HKV * D], dim=-1)
    q_ref = apply_rope(q_ref.view(1, T, H, D).transpose(1, 2), cos, sin)  # [1, H, T, D]
    k_new = apply_rope(k_new.view(1, T, HKV, D).transpose(1, 2), cos, sin)
    k_ref, v_ref = k_ring.clone(), v_ring.clone()
    k_ref.index_copy_(2, positions % slots, k_new)
    v_ref.index_copy_(2, positions % slots, v_new.view(1, T, HKV, D).transpose(1, 2))
    kp, qp = slot_pos[None, :], positions[:, None]
    mask = (kp >= 0) & (kp <= qp) & (kp > qp - W)
    want = F.scaled_dot_product_attention(q_ref.float(), k_ref.float(), v_ref.float(), attn_mask=mask,
                                          enable_gqa=HKV != H).transpose(1, 2)  # fmt: skip
    args = dict(qkv=qkv, bias=bias, cos=cos, sin=sin, positions=positions, k_cache=k_ring, v_cache=v_ring,
                slot_pos=slot_pos, window=W, n_heads=H)  # fmt: skip
    return args, (k_ref, v_ref), want


@pytest.mark.parametrize(("H", "HKV", "D", "W", "slack", "T", "p0", "with_bias", "dtype"), CASES)
def test_split_kv_attention_with_rope_and_ring_write(H, HKV, D, W, slack, T, p0, with_bias, dtype):
    """The ring after the call holds the rotated new keys and the values bit for bit (plus the
    projection's bias where given: the encoder's), every other slot untouched; the output is
    attention over that ring within the output rounding."""
    from asr.kernels.attention import attention

    args, (k_ref, v_ref), want = _attention_case(H, HKV, D, W, slack, T, p0, with_bias, dtype)
    got = attention(**args).float()
    assert torch.equal(args["k_cache"], k_ref) and torch.equal(args["v_cache"], v_ref)
    # bf16 output rounding (2^-9 relative) is the whole difference: both accumulate in fp32.
    assert (got - want).abs().max() <= 2**-8 * want.abs().max() + 1e-6
    with pytest.raises(ValueError, match="cache dtype"):
        attention(**{**args, "k_cache": args["k_cache"].half(), "v_cache": args["v_cache"].half()})


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("H", "HKV", "D", "W", "slack", "T", "p0", "with_bias"), [
    (32, 8, 128, 8192, 64, 64, 8230, False),  # a decoder prefill over 33 splits, wrapping the ring
    (32, 32, 64, 750, 256, 256, 900, True),  # the largest encoder chunk, 16 row blocks per split
])  # fmt: skip
def test_cuda_attention_ring_write_is_race_free(H, HKV, D, W, slack, T, p0, with_bias):
    """On a real GPU the programs run at once (the interpreter runs them one by one): many
    row-block programs of each split write the same new slots and read them back. Repeated calls
    on fresh copies of the ring must all leave it bit-exact and give the same output."""
    from asr.kernels.attention import attention

    args, (k_ref, v_ref), want = _attention_case(H, HKV, D, W, slack, T, p0, with_bias, torch.bfloat16)
    k0, v0 = args["k_cache"].clone(), args["v_cache"].clone()
    first = None
    for _ in range(20):
        k_ring, v_ring = k0.clone(), v0.clone()
        out = attention(**{**args, "k_cache": k_ring, "v_cache": v_ring})
        assert torch.equal(k_ring, k_ref) and torch.equal(v_ring, v_ref)
        first = out if first is None else first
        assert torch.equal(out, first)
    assert (first.float() - want).abs().max() <= 2**-8 * want.abs().max()


@pytest.mark.parametrize("M", [1, 2, 4, 8])
@pytest.mark.parametrize(("group", "offsets"), [(32, False), (16, False), (32, True)])
def test_int8_gemv(M, group, offsets):
    from asr.kernels.gemv import int8_gemv

    gen = torch.Generator().manual_seed(M * group)
    N, K = 72, 1056  # not a multiple of the K tile: the last block's groups are masked
    codes = torch.randint(-128, 128, (N, K), dtype=torch.int8, generator=gen)
    scale = torch.rand(N, K // group, generator=gen) * 0.01
    offset = torch.randn(N, K // group, generator=gen) * 0.01 if offsets else None
    values = (codes.float().view(N, K // group, group) * scale[..., None]
              + (0 if offset is None else offset[..., None])).view(N, K)  # fmt: skip
    x = torch.randn(M, K, generator=gen).to(torch.bfloat16)
    want = x.float() @ values.T
    to = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    got = int8_gemv(x.to(DEVICE), to(codes), to(scale), to(offset), group).float().cpu()
    assert (got - want).abs().max() <= 2**-8 * want.abs().max()


@pytest.mark.parametrize("M", [1, 3, 8])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dense_gemv(M, dtype):
    """Against a float32 matmul of the same bf16/fp16 values: only the output rounding differs.
    K = 1100 is not a multiple of the tile, so the masked tail is exercised."""
    from asr.kernels.gemv import dense_gemv

    gen = torch.Generator().manual_seed(M)
    N, K = 40, 1100
    w = torch.randn(N, K, generator=gen).to(dtype)
    x = torch.randn(M, K, generator=gen).to(dtype)
    want = x.float() @ w.float().T
    got = dense_gemv(x.to(DEVICE), w.to(DEVICE)).float().cpu()
    assert (got - want).abs().max() <= 2**-8 * want.abs().max()
    with pytest.raises(ValueError, match="1 to 8 rows"):
        dense_gemv(torch.zeros(9, K, dtype=dtype, device=DEVICE), w.to(DEVICE))


def _int8_weight(kind: str, N: int, K: int, gen: torch.Generator) -> tuple:
    """(codes, scale, offset, group, block_scale) of a random int8 weight: Q8_0-like float16
    scales, with offsets (Q5_1-like), or Q6_K's int8 sub-scales times a float16 scale per 256."""
    group = 16 if kind == "int8-q6k" else 32
    codes = torch.randint(-32 if kind == "int8-q6k" else -128, 32 if kind == "int8-q6k" else 128, (N, K),
                          dtype=torch.int8, generator=gen).to(DEVICE)  # fmt: skip
    if kind == "int8-q6k":
        scale = torch.randint(-128, 128, (N, K // group), dtype=torch.int8, generator=gen).to(DEVICE)
        block = (torch.rand(N, K // 256, generator=gen) * 1e-3).to(torch.float16).to(DEVICE)
    else:
        scale, block = (torch.rand(N, K // group, generator=gen) * 0.01).to(torch.float16).to(DEVICE), None
    offset = (torch.randn(N, K // group, generator=gen) * 0.01).to(DEVICE) if kind == "int8-offsets" else None
    return codes, scale, offset, group, block


@pytest.mark.parametrize("M", [1, 4])
@pytest.mark.parametrize("kind", ["dense", "int8", "int8-offsets", "int8-q6k"])
def test_gemv_takes_the_swiglu_input_bit_for_bit(M, kind):
    """glu=True: the GEMV reads SwiGLU's [gate | up] and forms silu(gate) * up itself. Its output
    equals silu_mul then the plain GEMV exactly (the same rounded inputs, the same sums)."""
    from asr.kernels.gemv import dense_gemv, int8_gemv
    from asr.kernels.norm import silu_mul

    gen = torch.Generator().manual_seed(M)
    # The decoder's w2 takes K = 9216; any K the tiles do not divide will do (Q6_K: whole blocks of 256).
    N, K = 72, 1280 if kind == "int8-q6k" else 1056
    gate_up = (torch.randn(M, 2 * K, generator=gen) * 3).to(torch.bfloat16).to(DEVICE)
    if kind == "dense":
        w = torch.randn(N, K, generator=gen).to(torch.bfloat16).to(DEVICE)
        got, want = dense_gemv(gate_up, w, glu=True), dense_gemv(silu_mul(gate_up), w)
    else:
        args = _int8_weight(kind, N, K, gen)
        got, want = int8_gemv(gate_up, *args, glu=True), int8_gemv(silu_mul(gate_up), *args)
    assert got.shape == (M, N)
    assert torch.equal(got, want)


@pytest.mark.parametrize("M", [1, 4])
@pytest.mark.parametrize("parts", ["plain", "delta", "delta+bias+scale"])
@pytest.mark.parametrize("kind", ["dense", "int8", "int8-q6k"])
def test_gemv_forms_the_pre_norm_input_itself(M, parts, kind):
    """norm=NormedInput: the GEMV reads the residual stream and forms the pre-norm's output as it
    loads it. The new residual h it writes equals the norm kernel's bit for bit; the product
    equals add_rmsnorm then the plain GEMV up to the sum of squares' order (the normalised input
    may move by one bf16 unit here and there), checked against a float32 product of the norm
    kernel's own output."""
    from asr.kernels.gemv import NormedInput, dense_gemv, int8_gemv
    from asr.kernels.norm import add_rmsnorm, rmsnorm

    gen = torch.Generator().manual_seed(M * 7 + len(parts))
    # The decoder's K = 3072 (three whole steps of the 1024-column sum of squares) and the
    # encoder's K = 1280 (a partial last step).
    N, K = 72, 1280 if kind == "int8-q6k" else 3072
    bf16 = torch.bfloat16

    def rand(*shape: int, s: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * s).to(bf16).to(DEVICE)

    x, gain = rand(M, K, s=3.0), rand(K)
    delta = rand(M, K) if parts != "plain" else None
    bias = rand(K, s=0.1) if "bias" in parts else None
    scale = (1 + rand(K, s=0.1).float()).to(bf16) if "scale" in parts else None
    if delta is None:
        h_want, normed = x, rmsnorm(x, gain, 1e-5, scale)
    else:
        h_want, normed = add_rmsnorm(x, delta, gain, 1e-5, scale, bias)
    h = torch.full_like(x, float("nan")) if delta is not None else None
    norm = NormedInput(gain, 1e-5, delta, bias, scale, h)
    if kind == "dense":
        w = rand(N, K)
        got, plain, exact = dense_gemv(x, w, norm=norm), dense_gemv(normed, w), normed.float() @ w.float().T
    else:
        args = _int8_weight(kind, N, K, gen)
        codes, sc, off, group, block = args
        values = sc.float() if block is None else sc.float() * block.float().repeat_interleave(256 // group, dim=1)
        w = (codes.float().view(N, K // group, group) * values[..., None]).view(N, K)
        got, plain, exact = int8_gemv(x, *args, norm=norm), int8_gemv(normed, *args), normed.float() @ w.T
    if h is not None:
        assert torch.equal(h, h_want)
    assert got.shape == (M, N)
    assert (got.float() - exact).abs().max() <= 2**-7 * exact.abs().max()
    differs = (got != plain).float().mean().item()
    assert differs <= 0.05, f"{differs:.1%} of the products differ from the unfused ones"


def test_swiglu_hands_gate_up_to_the_down_projection_unless_told_not_to(monkeypatch):
    """SwiGLU with a GEMV form as w2 calls its glu_product (one launch fewer) and gives the same
    bits as the separate activation kernel, which ``kernels.swiglu_unfused()`` brings back."""
    from asr.fuse import accelerate
    from asr.layers import SwiGLU

    gen = torch.Generator().manual_seed(3)
    ffn = SwiGLU(64, 160, w2_bias=False)
    for p in ffn.parameters():
        p.data = torch.randn(p.shape, generator=gen).to(torch.bfloat16) * 0.1
    accelerate(ffn)
    ffn = ffn.to(DEVICE)
    calls = []
    real = type(ffn.w2).glu_product
    monkeypatch.setattr(type(ffn.w2), "glu_product", lambda self, gu: calls.append(gu.shape) or real(self, gu))
    x = torch.randn(1, 1, 64, generator=gen).to(torch.bfloat16).to(DEVICE)
    fused, _ = ffn(x)
    assert calls == [(1, 1, 320)]
    with kernels.swiglu_unfused():
        plain, _ = ffn(x)
    assert len(calls) == 1
    assert torch.equal(fused, plain)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # silu of random codes
@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize("form", ["dense", "int8"])
def test_a_deferred_pre_norm_is_formed_by_the_projection_that_reads_it(monkeypatch, form, rows):
    """With ``kernels.norm_fused()``, RMSNorm.add(defer=True) hands a PendingNorm on, and a GEMV
    form of the projection reading it (dense at one row, int8 up to eight) forms the norm as it
    loads its input: the norm's launch goes away. The residual it writes equals the unfused one
    bit for bit and the output agrees within the norm's summation order; a form that cannot
    (dense at four rows runs on cuBLAS) gets the norm kernel's output, and the same bits."""
    import numpy as np
    from gguf import GGMLQuantizationType

    from asr.fuse import accelerate
    from asr.layers import PendingNorm, SwiGLU
    from asr.quant.fast import Int8Linear
    from asr.quant.tensor import QuantizedTensor
    from asr.quant.types import QUANT_TYPES_BY_NAME
    from tests.gguf_fixtures import random_quant_bytes

    gen = torch.Generator().manual_seed(rows)
    dim, hidden = 256, 320
    ffn = SwiGLU(dim, hidden, w2_bias=False)
    for p in ffn.parameters():
        p.data = torch.randn(p.shape, generator=gen).to(torch.bfloat16) * 0.1
    accelerate(ffn)
    if form == "int8":
        packed = random_quant_bytes(np.random.default_rng(rows), GGMLQuantizationType.Q8_0, 2 * hidden, dim)
        qweight = QuantizedTensor(torch.from_numpy(packed), QUANT_TYPES_BY_NAME["Q8_0"], (2 * hidden, dim))
        ffn.w13 = Int8Linear(qweight, None, torch.bfloat16)
    ffn = ffn.to(DEVICE)
    calls = []
    real = type(ffn.w13).normed_product
    monkeypatch.setattr(type(ffn.w13), "normed_product", lambda self, pn: calls.append(pn.shape) or real(self, pn))
    norm = RMSNorm(dim, 1e-5).to(DEVICE)
    norm.weight.data = (1 + torch.randn(dim, generator=gen) * 0.1).to(DEVICE, torch.bfloat16)
    x, delta = (torch.randn(2, 1, rows, dim, generator=gen) * 2).to(DEVICE, torch.bfloat16)
    scale = (1 + torch.randn(dim, generator=gen) * 0.1).to(DEVICE, torch.bfloat16)
    with kernels.norm_fused(False):
        h_plain, normed = norm.add(x, delta, scale, defer=True)
        plain, _ = ffn(normed)
    with kernels.norm_fused():
        h, pending = norm.add(x, delta, scale, defer=True)
        assert isinstance(pending, PendingNorm)
        fused, _ = ffn(pending)
    assert len(calls) == 1
    assert torch.equal(h, h_plain)
    if form == "dense" and rows > 1:  # cuBLAS takes the norm kernel's output
        assert torch.equal(fused, plain)
    else:
        assert (fused.float() - plain.float()).abs().max() <= 2**-6 * plain.float().abs().max()


@pytest.mark.parametrize("kind", ["dense", "int8"])
def test_every_gemv_tile(kind):
    """Each tile the GPU autotuner may pick (the interpreter always runs one wide tile), called
    directly, with N and K that no tile divides and 1 to 8 rows, against a float32 matmul."""
    import triton

    from asr.kernels import gemv

    gen = torch.Generator().manual_seed(5)
    N, K, G = 76, 1120 if kind == "dense" else 1056, 32
    for M in (1, 3, 8):
        x = torch.randn(M, K, generator=gen).to(torch.bfloat16)
        x_dev = x.to(DEVICE)
        plain, _ = gemv._norm_args(x_dev, None)  # no pre-norm in the input
        y = torch.empty(M, N, dtype=torch.bfloat16, device=DEVICE)
        if kind == "dense":
            w = torch.randn(N, K, generator=gen).to(torch.bfloat16)
            want = x.float() @ w.float().T
            w = w.to(DEVICE)
            for bn, bk, warps, reduce_each in gemv._DENSE_TILES:
                gemv._dense_gemv_kernel.fn[(triton.cdiv(N, bn),)](
                    x_dev, w, y, *plain, M, N, K, M_PAD=gemv._pad(M), BLOCK_N=bn, BLOCK_K=bk,
                    REDUCE_EACH=reduce_each, GLU=False, NORM=0, num_warps=warps,
                    **kernels.launch_options(x_dev))  # fmt: skip
                assert (y.float().cpu() - want).abs().max() <= 2**-8 * want.abs().max(), (bn, bk, reduce_each, M)
        else:
            codes = torch.randint(-128, 128, (N, K), dtype=torch.int8, generator=gen)
            scale = torch.rand(N, K // G, generator=gen) * 0.01
            want = x.float() @ (codes.float().view(N, K // G, G) * scale[..., None]).view(N, K).T
            codes, scale = codes.to(DEVICE), scale.to(DEVICE)
            for bn, bk, warps, stages in gemv._INT8_TILES:
                gemv._int8_gemv_kernel.fn[(triton.cdiv(N, bn),)](
                    x_dev, codes, scale, scale, scale, y, *plain, M, N, K, G=G, M_PAD=gemv._pad(M),
                    HAS_OFFSET=False, SUPER=0, BLOCK_N=bn, BLOCK_K=bk, GLU=False, NORM=0, num_warps=warps,
                    num_stages=stages,
                    **kernels.launch_options(x_dev))  # fmt: skip
                assert (y.float().cpu() - want).abs().max() <= 2**-8 * want.abs().max(), (bn, bk, M)


def test_autotune_tiles_on_gpu_interpreter_and_test_suite(monkeypatch):
    """Every tile on a GPU, the one wide tile in the interpreter, the first tile only under
    VOXCAP_AUTOTUNE=0 (what the CUDA test suite runs with)."""
    from asr.kernels import gemv

    wide = gemv.triton.Config(gemv._INTERPRETER_TILE)
    monkeypatch.setattr(gemv, "interpreting", lambda: False)
    monkeypatch.delenv("VOXCAP_AUTOTUNE", raising=False)
    assert gemv._tuned(gemv._INT8_CONFIGS, wide) == gemv._INT8_CONFIGS
    monkeypatch.setenv("VOXCAP_AUTOTUNE", "0")
    assert gemv._tuned(gemv._INT8_CONFIGS, wide) == gemv._INT8_CONFIGS[:1]
    monkeypatch.setattr(gemv, "interpreting", lambda: True)
    assert gemv._tuned(gemv._DENSE_CONFIGS, wide) == [wide]


@pytest.mark.parametrize(("stride", "frames"), [(1, 18), (2, 17), (2, 3)])
@pytest.mark.parametrize("use_kernels", [True, False])
def test_conv_stem_as_matmul_equals_conv1d(stride, frames, use_kernels):
    """The encoder's causal convs run as matmuls over time-major windows (GEMV chunks of 8 rows
    on the kernel path, F.linear otherwise): against torch's conv1d in float32 on the same bf16
    values, within the output rounding. 18 frames at stride 1 give 16 rows: two GEMV chunks."""
    from asr.encoder import _causal_conv

    gen = torch.Generator().manual_seed(frames)
    conv = torch.nn.Conv1d(24, 40, kernel_size=3, stride=stride).to(DEVICE, torch.bfloat16)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(40, 24, 3, generator=gen))
        conv.bias.copy_(torch.randn(40, generator=gen))
    x = torch.randn(1, frames, 24, generator=gen).to(DEVICE, torch.bfloat16)  # [B, T, C]
    want = F.conv1d(x.float().transpose(1, 2), conv.weight.float(), conv.bias.float(), stride=stride)
    want = want.transpose(1, 2).cpu()  # [B, T_out, C_out]
    with contextlib.nullcontext() if use_kernels else kernels.disabled():
        got = _causal_conv(conv, x).float().cpu()
    assert got.shape == want.shape == (1, (frames - 3) // stride + 1, 40)
    assert (got - want).abs().max() <= 2**-7 * want.abs().max()


@pytest.mark.parametrize("preset", ["wrap"])
def test_stream_with_kernels_matches_the_reference_path(tiny_models, preset):
    """End to end in bf16: fused projections and the kernels (norms, RoPE + ring write, split-KV
    attention, SwiGLU) against the plain PyTorch path on the same weights, teacher-forced (both
    see the same fed-back ids), through several wraps of both rings. Argmax may differ only
    where the reference itself has a near-tie (bf16 logits can tie exactly)."""
    import asr
    from tests.test_cuda import stream_forced
    from tests.tiny_model import synthetic_speechlike

    path, _ = tiny_models(preset)
    audio = synthetic_speechlike(4.0, seed=11)
    plain = asr.load_model(path, device=DEVICE, dtype=torch.bfloat16, fast=False)
    with kernels.disabled():
        ref_ids, ref_logits = stream_forced(plain, audio, 480, forced_ids=None)
    model = asr.load_model(path, device=DEVICE, dtype=torch.bfloat16)
    assert model.net.decoder.layers[0].attention.wqkv is not None
    own, logits = stream_forced(model, audio, 480, forced_ids=ref_ids)
    n = len(ref_ids)
    assert n > 50
    gaps = [float((a - b).abs().max()) for a, b in zip(logits[:n], ref_logits, strict=True)]
    scale = max(float(a.abs().max()) for a in ref_logits)
    # bf16 rounding differences (summation order in the norms and attention): a few bf16 units.
    assert max(gaps) <= 2**-5 * scale, (max(gaps), scale)
    for step, (mine, theirs) in enumerate(zip(own[:n], ref_ids, strict=True)):
        if mine != theirs:
            top = ref_logits[step].topk(2).values
            assert float(top[0] - top[1]) <= 2 * gaps[step], f"step {step}: not a near-tie"
