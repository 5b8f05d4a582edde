"""The wait of programmatic dependent launch, shared by every kernel (see asr/kernels/__init__.py)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def wait_for_predecessor(USE_GDC: tl.constexpr):
    """Everything after this sees the previous kernel's writes, and the next kernel may launch.

    Call it exactly once in every program, before the first load of an activation and the first
    store: a program that skipped it could let the kernel finish before its predecessor, and the
    next kernel waits only on this one. Loads of weights (written before the step began) may go
    first, so their latency overlaps the previous kernel. Letting the next kernel launch at once is
    safe for the same reason: it, too, only waits here.
    """
    if USE_GDC:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
