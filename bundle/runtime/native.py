"""Keeping native libraries' chatter away from the user's terminal."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["quiet_native_stderr"]


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send fd 2 to /dev/null for the block.

    onnxruntime's missing-CUDA wall of text and TensorFlow's C++ start-up logs are
    written by native code straight to the file descriptor, bypassing Python's
    ``sys.stderr``; only redirecting the descriptor silences them.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
