"""Pull the next matrix's weights into L2 while the current one multiplies (inside CUDA graphs).

At batch 1 most products are small (an encoder matrix is 1 to 8 MB in 4 bits) and each kernel
spends a good part of its few microseconds waiting for its first bytes from HBM, so the GPU reads
far below its bandwidth between and during those kernels. A side stream in the graph asks for the
next matrix's weights (``asr/kernels/prefetch.py``: prefetch instructions, no registers) while
the current product and the small kernels after it run; the next product then finds them in L2.

How the graphs use it (asr/graphs.py): the warm-up forward runs under :func:`recording`, which
notes the products in the order they run; the capture runs under :func:`issuing`, which at each
product launches, on the side stream, the prefetch of the one after it (of the first, at the
start). The prefetch for product j + 1 starts once the kernels before product j are done (and
the prefetch for j), so the side stream runs at most one matrix ahead and what it brings in is
still in L2 when product j + 1 reads it. The main stream never waits for the side stream,
except once at the end of the graph. Prefetches are hints: no value depends on them
(tests/test_cuda.py compares the two).

``VOXCAP_L2_PREFETCH``: ``bulk`` or ``1`` (Hopper's bulk prefetch; older GPUs get ``lines``),
``lines`` (one prefetch per 128-byte line), ``0`` (off, the default: no H100 has run it yet, so
it stays opt-in until a benchmark says it pays; README, Benchmarks).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from asr import kernels


@dataclass
class Settings:
    mode: str = {"1": "bulk", "bulk": "bulk", "lines": "lines"}.get(os.environ.get("VOXCAP_L2_PREFETCH", "0"), "0")
    # Matrices larger than this are not prefetched: with the product beside them they would not
    # both fit the H100's 50 MB of L2 (the decoder's 400 MB head, BF16's 113 MB w13).
    max_bytes: int = 40 << 20
    programs: int = 16  # prefetch programs per matrix: a few SMs' worth of requests in flight


settings = Settings()
_local = threading.local()


@contextmanager
def using(mode: str) -> Iterator[None]:
    """Graphs captured inside the block prefetch in ``mode`` ("0", "bulk" or "lines")."""
    if mode not in ("0", "bulk", "lines"):
        raise ValueError(f"unknown L2 prefetch mode {mode!r}: use 0, bulk or lines")
    previous, settings.mode = settings.mode, mode
    try:
        yield
    finally:
        settings.mode = previous


def enabled() -> bool:
    return settings.mode in ("bulk", "lines") and kernels.triton_available() and not kernels.interpreting()


@dataclass
class _Plan:
    order: list[nn.Module] = field(default_factory=list)  # products, in the order they run
    issuing: bool = False
    next_index: int = 0
    stream: torch.cuda.Stream | None = None
    launched: int = 0  # prefetch kernels queued (captured)


def weights_of(module: nn.Module) -> list[torch.Tensor]:
    """The tensors a product reads from memory: its weight, codes, scales and offsets (not the
    bias, a few KB, nor the rows kept for embedding lookups, which products never read)."""
    tensors = [t for name, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
               if t is not None and name not in ("bias", "row_data")]  # fmt: skip
    if not tensors or sum(t.numel() * t.element_size() for t in tensors) > settings.max_bytes:
        return []
    return [t for t in tensors if t.is_cuda and t.is_contiguous()]


@contextmanager
def recording() -> Iterator[list[nn.Module]]:
    """Note the products run inside the block (the warm-up forward); yields the list.

    At the end the first product's weights are prefetched once for real, on the current stream:
    that builds the prefetch kernel here, since loading a new kernel inside a capture is not allowed.
    """
    plan = _Plan()
    previous, _local.plan = getattr(_local, "plan", None), plan
    try:
        yield plan.order
    finally:
        _local.plan = previous
    if enabled():
        first = next((i for i, m in enumerate(plan.order) if weights_of(m)), None)
        if first is not None:
            plan.stream = torch.cuda.current_stream()
            _launch(plan, first)


def side_stream(device: torch.device) -> torch.cuda.Stream | None:
    """The stream :func:`issuing` prefetches on, made before a capture (None when prefetch is off).

    High priority: a prefetch program is a few instructions, best issued as soon as it may run.
    It also comes from another pool than the capture's own stream (default priority), which a
    stream of the same pool can turn out to be (PyTorch hands them out round robin).
    """
    return torch.cuda.Stream(device, priority=-1) if enabled() else None


@contextmanager
def issuing(order: list[nn.Module], side: torch.cuda.Stream | None) -> Iterator[_Plan]:
    """Inside a CUDA graph capture: prefetch each product's weights one product ahead, on ``side``
    (from :func:`side_stream`). Yields the plan, whose ``launched`` counts the prefetch kernels
    captured."""
    main = None if side is None else torch.cuda.current_stream(side.device)
    if not enabled() or not order or side is None or side == main:
        yield _Plan()
        return
    plan = _Plan(order=order, issuing=True, stream=side)
    plan.stream.wait_stream(main)  # the side stream joins the capture here
    _launch(plan, 0)
    previous, _local.plan = getattr(_local, "plan", None), plan
    try:
        yield plan
    finally:
        _local.plan = previous
        main.wait_stream(plan.stream)  # rejoin before the capture ends


def before_product(module: nn.Module) -> None:
    """Called by every fast linear form as its product begins (asr/quant/fast.py)."""
    plan: _Plan | None = getattr(_local, "plan", None)
    if plan is None:
        return
    if not plan.issuing:
        plan.order.append(module)  # (a recording: the stream is not set until it ends)
        return
    index = plan.next_index
    if index >= len(plan.order) or plan.order[index] is not module:
        plan.next_index = len(plan.order)  # not the recorded order after all: stop prefetching
        return
    plan.next_index = index + 1
    if index + 1 < len(plan.order):
        plan.stream.wait_stream(torch.cuda.current_stream(plan.stream.device))
        _launch(plan, index + 1)


def _launch(plan: _Plan, index: int) -> None:
    tensors = weights_of(plan.order[index])
    if not tensors:
        return
    from asr.kernels.prefetch import MAX_TENSORS, prefetch_l2

    bulk = settings.mode == "bulk" and kernels.hopper_or_later(tensors[0].device.index or 0)
    with torch.cuda.stream(plan.stream):
        for start in range(0, len(tensors), MAX_TENSORS):
            prefetch_l2(tensors[start : start + MAX_TENSORS], settings.programs, bulk)
            plan.launched += 1
