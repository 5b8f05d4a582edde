"""Triton kernels for the CUDA fast path: fused norms and activations, RoPE with the KV write,
split-KV attention, and an int8 group-scale GEMV for the 5..8-bit GGUF types.

The layers call these when the tensors are on CUDA and Triton is importable, and fall back to
plain PyTorch (the reference path) otherwise. ``VOXCAP_KERNELS=0`` turns them off.

On Hopper and later GPUs every kernel here is launched with programmatic dependent launch
(``launch_options``): it may start while the kernel before it drains, issues the loads that
depend on nothing earlier in the step (its weights), and only then waits for its predecessor
(``griddepcontrol.wait``) before it reads an activation or writes anything. In a CUDA graph of
several hundred small kernels that hides most of each launch's latency. ``VOXCAP_PDL=0`` turns
it off (the kernels then wait at once, as a plain launch does).

On CPU the CPU test suite runs them through Triton's interpreter inside ``on_cpu()``; that needs
``TRITON_INTERPRET=1`` in the environment before Triton is first imported (Triton's own helper
kernels, such as the combine function of ``tl.sum``, are built at import).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache, lru_cache

import torch

_state = {"enabled": os.environ.get("VOXCAP_KERNELS", "1") != "0", "cpu": False,
          "pdl": os.environ.get("VOXCAP_PDL", "1") != "0", "fused_swiglu": True,
          "fused_norm": os.environ.get("VOXCAP_FUSED_NORM", "0") == "1"}


@lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a Triton that cannot find its compiler
        return False
    return True


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def active(x: torch.Tensor) -> bool:
    """Whether the fused kernels run for a tensor on this device."""
    return _state["enabled"] and (x.is_cuda or (_state["cpu"] and interpreting())) and triton_available()


@cache
def hopper_or_later(index: int) -> bool:
    return torch.cuda.get_device_capability(index) >= (9, 0)


def launch_options(x: torch.Tensor) -> dict[str, bool]:
    """Extra launch arguments for a kernel taking the ``USE_GDC`` constexpr: programmatic
    dependent launch on Hopper and later (``griddepcontrol`` needs sm_90), nothing elsewhere
    (older GPUs, the CPU interpreter)."""
    if _state["pdl"] and x.is_cuda and not interpreting() and hopper_or_later(x.device.index or 0):
        return {"USE_GDC": True, "launch_pdl": True}
    return {"USE_GDC": False}


def pdl_disabled() -> contextlib.AbstractContextManager[None]:
    """Launch without programmatic dependent launch inside the block (A/B tests and benchmarks)."""
    return _setting("pdl", False)


@contextmanager
def _setting(key: str, value: bool) -> Iterator[None]:
    previous = _state[key]
    _state[key] = value
    try:
        yield
    finally:
        _state[key] = previous


def fused_swiglu() -> bool:
    """Whether SwiGLU hands [gate | up] to a down projection that forms silu(gate) * up itself."""
    return _state["fused_swiglu"]


def swiglu_unfused() -> contextlib.AbstractContextManager[None]:
    """Run SwiGLU's activation as its own kernel inside the block (A/B benchmarks, tests)."""
    return _setting("fused_swiglu", False)


def fused_norm() -> bool:
    """Whether a pre-norm leaves its work to the GEMV that reads its output (asr/layers.py
    ``PendingNorm``). Off unless ``VOXCAP_FUSED_NORM=1`` until a GPU has timed it."""
    return _state["fused_norm"]


def norm_fused(on: bool = True) -> contextlib.AbstractContextManager[None]:
    """Fuse pre-norms into the GEMVs that read them (or not, ``on=False``) inside the block."""
    return _setting("fused_norm", on)


def disabled() -> contextlib.AbstractContextManager[None]:
    """Run the plain PyTorch reference path inside the block (tests compare the two)."""
    return _setting("enabled", False)


def on_cpu() -> contextlib.AbstractContextManager[None]:
    """Run the kernels on CPU tensors through Triton's interpreter (needs TRITON_INTERPRET=1)."""
    if not interpreting():
        raise RuntimeError("kernels.on_cpu() needs TRITON_INTERPRET=1 set before Triton is imported")
    return _setting("cpu", True)
