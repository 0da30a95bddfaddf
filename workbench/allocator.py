"""glibc malloc thresholds that speed up CNN training on the CPU (measured in bench/ALLOCATOR.md).

By default glibc returns freed memory to the system and maps large blocks afresh, so every training
step pays page faults for the same activation buffers. Raising the mmap and trim thresholds and the
top pad keeps that memory in the heap. Set with `mallopt` at run time, the same knobs as the
MALLOC_*_ environment variables (whose values a user's environment takes precedence with).
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters (malloc.h)
INT_MAX = 2**31 - 1
THRESHOLDS = {M_MMAP_THRESHOLD: 32 * 2**20, M_TRIM_THRESHOLD: INT_MAX, M_TOP_PAD: 512 * 2**20}


def tune_allocator() -> bool:
    """Set THRESHOLDS with glibc's mallopt for this process.

    Returns:
        True when set; False where there is no glibc (macOS, Windows, musl) or the environment
        already sets MALLOC_* variables (the user's choice wins).
    """
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in THRESHOLDS.items())
