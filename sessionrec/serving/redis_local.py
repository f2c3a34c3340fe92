"""A throwaway redis-server on 127.0.0.1 (Debian's redis-server): for the demo, benchmarks and tests.

In-memory only (no RDB/AOF files), a free loopback port and a unix socket beside it (owner only),
protected mode on, stopped with the process group. The embedded server talks to it over the socket
(`socket_url`): a round trip there skips the TCP loopback stack, about a tenth of a hot round trip
on this project's 2-core machine (docs/BENCHMARKS.md, the stateful path); the port stays for tools
and tests that expect host:port. A cluster uses a managed or charted Redis instead (docs/DEPLOY.md, "Session history").
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sessionrec.errors import SessionrecError
from sessionrec.serving.launcher import free_ports


class RedisUnavailable(SessionrecError):
    """redis-server is not installed or did not start."""


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class LocalRedis:
    """`with LocalRedis() as redis: redis.url` -> "redis://127.0.0.1:<port>/0"."""

    def __init__(self, port: int = 0, binary: str | None = None):
        self.binary = binary or redis_server_binary()
        if self.binary is None:
            raise RedisUnavailable("redis-server is not installed (Debian: apt-get install redis-server; "
                                   "scripts/setup.sh installs it)")
        self.requested_port = port
        self.port = port
        self.process: subprocess.Popen | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="sessionrec-redis-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        return self._dir / "redis.sock"

    @property
    def socket_url(self) -> str:
        """The same server through its unix socket (same machine only)."""
        return f"unix://{self.socket_path}?db=0"

    def start(self, timeout: float = 10.0) -> "LocalRedis":
        """Start (or restart on the same port, after stop() or a kill) and wait until it accepts connections."""
        if self.port == 0:
            self.port = free_ports(1)[0]
        command = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                   "--dir", str(self._dir),
                   "--unixsocket", str(self.socket_path), "--unixsocketperm", "700", "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisUnavailable(f"redis-server exited at start: {self.process.stderr.read().decode()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG") and self.socket_path.exists():
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RedisUnavailable(f"redis-server on port {self.port} not ready after {timeout:.0f} s")

    def signal(self, sig: int) -> None:
        """SIGSTOP (hang), SIGCONT (resume), SIGKILL (crash) for fault tests."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a stopped process does not act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def kill(self) -> None:
        """Crash it (SIGKILL): every session in it is lost, as with a real Redis failure."""
        if self.process is not None:
            self.signal(signal.SIGKILL)
            self.process.wait()
            if self.process.stderr:
                self.process.stderr.close()
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "LocalRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
