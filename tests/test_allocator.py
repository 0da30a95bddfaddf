"""Tests of workbench/allocator.py: glibc thresholds set in process, the user's environment respected."""
from __future__ import annotations

import ctypes
import sys

import pytest

from workbench.allocator import tune_allocator


def has_glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL("libc.so.6"), "mallopt")
    except OSError:
        return False


@pytest.mark.skipif(not has_glibc(), reason="mallopt needs glibc (Linux)")
def test_thresholds_are_set_unless_the_environment_sets_them(monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(key)
    assert tune_allocator() is True  # every mallopt call returned 1 (accepted)
    monkeypatch.setenv("MALLOC_TOP_PAD_", "0")
    assert tune_allocator() is False  # the user's own settings win
