"""Faults to inject into a running server or its repository (each test says what must happen).

    kill_stub(server.server.pid, "session_encoder")       # SIGKILL its python-backend stub
    with size_limited_folder(tmp / "disk", "600k"):       # a tmpfs of that size (root only)
        export_version(...)                               # -> OSError: No space left on device
    flip_byte(repo / "retrieval" / "2" / "items.faiss")   # a corrupted artifact
"""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

from sessionrec.errors import SessionrecError
from sessionrec.reliability.procs import python_stubs


class FaultUnavailable(SessionrecError):
    """This machine cannot inject the fault (e.g. mounting a tmpfs needs root)."""


def kill_stub(server_pid: int, model: str, sig: int = signal.SIGKILL) -> int:
    """Signal the (first) python-backend stub of `model`; its pid."""
    pids = python_stubs(server_pid).get(model)
    if not pids:
        raise LookupError(f"no python backend stub for model {model!r} under tritonserver {server_pid}")
    os.kill(pids[0], sig)
    return pids[0]


def flip_byte(path: str | Path, offset: int = -20) -> None:
    """Invert one byte, as a bad disk or a partial copy would leave it."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@contextmanager
def size_limited_folder(path: str | Path, size: str):
    """Mount a tmpfs of `size` (mount's syntax: "600k", "2m") on `path` for the duration; unmount after.

    Raises FaultUnavailable when mounting is not permitted (not root, no CAP_SYS_ADMIN).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise FaultUnavailable(f"cannot mount a tmpfs on {path}: {result.stderr.strip() or result.returncode}")
    try:
        yield path
    finally:
        # Lazy: a process still holding a file there (the server) must not keep the mount forever.
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def resize(path: str | Path, size: str) -> None:
    """Grow (or shrink) a tmpfs mounted by size_limited_folder: the operator freeing disk space."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)
