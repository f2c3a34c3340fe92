"""Run the real tritonserver binary shipped in the `nvidia-pytriton` wheel (embedded default and tests).

    with TritonServer("model_repository", models=["recommend"]) as server:   # 127.0.0.1, free ports
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

What it takes to make the wheel's tritonserver 2.51 work outside NGC images (see shared notes
TRITON-ON-CPU.md, measured here):
- the python backend stub for this interpreter is copied into `backends/python/` (`find_tritonserver`);
- the stub takes its Python from the first `python3` on PATH and the matching libpython from
  LD_LIBRARY_PATH; numpy 2.x there silently zeroes python-backend inputs (`server_environment`);
- every listener binds 127.0.0.1 unless told otherwise (tritonserver's own default is 0.0.0.0).

The server runs in its own process group with its output in a log file (never a pipe, which fills
and blocks it); `stop()` ends the group, so no python-backend stub outlives it.
"""

from __future__ import annotations

import filecmp
import functools
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sessionrec.errors import SessionrecError
from sessionrec.serving.tls import ClientTLS, GrpcTLS

LOOPBACK = "127.0.0.1"
STUB_NAME = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")
# tritonserver's message when a listener cannot bind, e.g. a port picked free and taken meanwhile:
# "failed to start GRPC service: Unavailable - Socket '127.0.0.1:47767' already in use".
_PORT_TAKEN = "already in use"


class LauncherError(SessionrecError):
    """tritonserver cannot be found, prepared or started; the message says what to do."""


class ServerStartError(LauncherError):
    """The server died or did not become ready; the message ends with the tail of its log."""


@dataclass(frozen=True)
class TritonInstallation:
    """Paths inside the installed `pytriton` package."""

    binary: Path  # pytriton/tritonserver/bin/tritonserver
    backend_dir: Path  # --backend-directory; backends/python holds libtriton_python.so and the stub
    cache_dir: Path  # --cache-directory: the 'local' response cache implementation
    libs_dir: Path  # site-packages/nvidia_pytriton.libs: the wheel's vendored shared libraries


@dataclass(frozen=True)
class _Interpreter:
    python3: Path  # what the stub will run: `python3` in the venv's bin/
    version: str  # "3.11": picks the stub build
    libdir: str  # sysconfig LIBDIR: where its libpython3.X.so lives
    purelib: str  # its site-packages
    numpy: str | None  # numpy.__version__, None when numpy does not import


def find_tritonserver(python_version: str | None = None) -> TritonInstallation:
    """Locate tritonserver in the installed pytriton package and put the python backend stub in place.

    Idempotent and safe when several processes race: the stub is copied to a temporary file beside
    its destination and renamed over it (an atomic replace of identical bytes).
    """
    version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    spec = importlib.util.find_spec("pytriton")  # locates without importing pytriton itself
    if spec is None or not spec.submodule_search_locations:
        raise LauncherError(
            f"tritonserver not found: the nvidia-pytriton wheel (==0.7.0, it ships the tritonserver "
            f"binary) is not installed for {sys.executable}; run `pip install -e .` in the project"
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    found = TritonInstallation(
        binary=root / "bin" / "tritonserver",
        backend_dir=root / "backends",
        cache_dir=root / "caches",
        libs_dir=root.parent.parent / "nvidia_pytriton.libs",
    )
    if not os.access(found.binary, os.X_OK):
        raise LauncherError(
            f"tritonserver not found at {found.binary}: this pytriton install has no server binary "
            "(it ships only in the Linux x86_64/aarch64 wheels of nvidia-pytriton==0.7.0)"
        )
    stub = root / "python_backend_stubs" / version / STUB_NAME
    if not stub.is_file():
        have = sorted(p.name for p in (root / "python_backend_stubs").glob("*"))
        raise LauncherError(f"no python backend stub for Python {version} in {stub.parent.parent} (has {have})")
    _install_stub(stub, found.backend_dir / "python" / STUB_NAME)
    return found


def _install_stub(source: Path, target: Path) -> None:
    if target.is_file() and os.access(target, os.X_OK) and filecmp.cmp(source, target, shallow=False):
        return
    try:
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{STUB_NAME}.")
    except PermissionError as exc:
        raise LauncherError(
            f"cannot put the python backend stub into {target.parent} ({exc}); run once with write "
            f"access to the environment, or copy {source} to {target}"
        ) from exc
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as inp:
            shutil.copyfileobj(inp, out)
        os.chmod(temporary, 0o755)
        os.replace(temporary, target)  # atomic: a concurrent exec sees the old or the new file
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


_PROBE = """
import json, sys, sysconfig
try:
    import numpy
    numpy_version = numpy.__version__
except Exception:
    numpy_version = None
print(json.dumps({"version": "%d.%d" % sys.version_info[:2], "libdir": sysconfig.get_config_var("LIBDIR"),
                  "purelib": sysconfig.get_paths()["purelib"], "numpy": numpy_version}))
"""


@functools.lru_cache(maxsize=None)
def _probe(python3: str) -> _Interpreter:
    """Ask the interpreter the stub will use about itself (numpy is checked by importing it there)."""
    try:
        result = subprocess.run([python3, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    except OSError as exc:
        raise LauncherError(f"cannot run {python3}: {exc}") from exc
    if result.returncode != 0:
        raise LauncherError(f"{python3} failed to describe itself: {result.stderr.strip()[-500:]}")
    facts = json.loads(result.stdout)
    return _Interpreter(Path(python3), facts["version"], facts["libdir"] or "", facts["purelib"], facts["numpy"])


def _interpreter(venv_python: str | Path) -> _Interpreter:
    # No resolve(): a venv's bin/python is a symlink out of the venv, and the venv is what counts.
    bin_dir = Path(os.path.abspath(venv_python)).parent
    python3 = bin_dir / "python3"
    if not python3.exists():
        raise LauncherError(f"{bin_dir} has no python3: the python backend stub runs the first python3 on PATH")
    return _probe(str(python3))


def server_environment(venv_python: str | Path = sys.executable) -> dict[str, str]:
    """Environment for tritonserver whose python models run in `venv_python`'s environment.

    Refuses numpy >= 2 there: the python backend then loads models and reports READY, but
    `as_numpy()` returns zeros and outputs come back empty, with nothing in the log.
    """
    interpreter = _interpreter(venv_python)
    if interpreter.numpy is None:
        raise LauncherError(
            f"numpy does not import in {interpreter.python3}: the python backend needs it (numpy==1.26.4)"
        )
    if int(interpreter.numpy.split(".")[0]) >= 2:
        raise LauncherError(
            f"numpy {interpreter.numpy} in {interpreter.python3}: the tritonserver 2.51 python backend "
            "silently corrupts inputs with numpy 2.x (zeros in, empty outputs out); install numpy==1.26.4"
        )
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(interpreter.python3.parent), env.get("PATH", os.defpath)])
    libs = [interpreter.libdir, os.path.join(interpreter.purelib, "nvidia_pytriton.libs")]
    libs += [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys(p for p in libs if p))  # ordered, no repeats
    # numpy's OpenBLAS starts a thread per core at import and they spin: ~100 of the ~230 ms of CPU a
    # python stub takes to start here, spent while a hot swap shares the cores with live traffic
    # (docs/RELIABILITY.md). Nothing on the serving path uses numpy's BLAS (the encoder is ONNX
    # Runtime, retrieval is FAISS with its own OpenMP threads), so one thread costs nothing.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` distinct ports that are free on `host` right now (the kernel picks them)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class TritonServer:
    """One tritonserver process: explicit model control, loopback listeners, log file, clean stop.

    Ports left at 0 are picked free on the bind address at `start()` (and re-picked if another
    process takes one first). `models=None` loads every model of the repository at start;
    a model that fails to load does not stop the others (see `failed_models`).
    """

    def __init__(
        self,
        model_repository: str | Path,
        *,
        models: Sequence[str] | None = None,
        grpc_port: int = 0,
        http_port: int = 0,
        metrics_port: int = 0,
        address: str = LOOPBACK,
        http_address: str | None = None,
        response_cache_bytes: int = 0,
        grpc_tls: GrpcTLS | None = None,
        client_tls: ClientTLS | None = None,
        log_file: str | Path | None = None,
        venv_python: str | Path = sys.executable,
        exit_timeout_s: int = 10,
        extra_args: Sequence[str] = (),
        admin_headers: dict[str, str] | None = None,
        environment: dict[str, str] | None = None,
    ):
        """
        Args:
            models: loaded at start (`--load-model`); None loads all, [] none (load later).
            address: bind address of the gRPC listener, and of HTTP/metrics unless `http_address`.
            http_address: HTTP and metrics listeners; they have no TLS, keep them on loopback when
                gRPC is exposed with TLS.
            response_cache_bytes: > 0 enables the local response cache for models that ask for it
                (`response_cache { enable: true }` in their config).
            grpc_tls: serve gRPC over TLS; `client_tls` is what `client()` then uses to connect.
            log_file: server stdout+stderr (appended); default a new file in the temp dir, kept.
            venv_python: the environment the python models run in (its bin/python3, numpy, libpython).
            exit_timeout_s: how long tritonserver waits for in-flight requests on SIGTERM.
            extra_args: more tritonserver flags, appended last.
            admin_headers: headers the launcher's own repository-index calls send, for a server
                whose admin APIs are restricted (--http-restricted-api, as the Helm chart runs it).
            environment: variables set for the server and its python models, over this process's
                (e.g. SESSIONREC_REDIS_URL for the session history step).
        """
        self.model_repository = Path(model_repository).absolute()
        self.models = None if models is None else list(models)
        self.address = address
        self.http_address = http_address or address
        self.response_cache_bytes = response_cache_bytes
        self.grpc_tls = grpc_tls
        self.client_tls = client_tls
        self.venv_python = venv_python
        self.exit_timeout_s = exit_timeout_s
        self.extra_args = list(extra_args)
        self.admin_headers = dict(admin_headers or {})
        self.environment = dict(environment or {})
        self.log_path = Path(log_file) if log_file else self._default_log_path()
        self._requested_ports = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}
        self.ports = dict(self._requested_ports)
        # Unique shared-memory names, so regions left by a killed server can be found and removed.
        self._shm_prefix = f"sessionrec_{os.getpid()}_{secrets.token_hex(4)}_"
        self._process: subprocess.Popen | None = None
        self._log_offset = 0
        self._client = None
        self._finalizer: weakref.finalize | None = None
        self.failed_models: dict[str, str] = {}  # name -> reason, for models that failed at start
        self.startup_seconds: float | None = None  # launch to ready, last start

    # ----------------------------------------------------------------- lifecycle

    def command(self, installation: TritonInstallation | None = None) -> list[str]:
        """The tritonserver command line, each flag with the reason it is there."""
        found = installation or find_tritonserver()
        args = [
            str(found.binary),
            f"--model-repository={self.model_repository}",
            # Explicit control: only the named models load, and tests/CLI can load/unload at run time.
            "--model-control-mode=explicit",
            *[f"--load-model={name}" for name in (["*"] if self.models is None else self.models)],
            # One model failing to load must not take the others (and the server) down.
            "--exit-on-error=false",
            # Configs in the repository are complete and generated; nothing is filled in behind them.
            "--disable-auto-complete-config",
            f"--backend-directory={found.backend_dir}",
            f"--cache-directory={found.cache_dir}",
            # tritonserver binds 0.0.0.0 by default: every listener is given an address explicitly.
            f"--grpc-address={self.address}",
            f"--grpc-port={self.ports['grpc']}",
            f"--http-address={self.http_address}",
            f"--http-port={self.ports['http']}",
            f"--metrics-address={self.http_address}",
            f"--metrics-port={self.ports['metrics']}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            # Named shared-memory regions (/dev/shm/<prefix><uuid>): removable if the server is killed.
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
        ]
        if self.response_cache_bytes > 0:
            args.append(f"--cache-config=local,size={self.response_cache_bytes}")
        if self.grpc_tls is not None:
            args += self.grpc_tls.flags()
        return args + self.extra_args

    def start(self, timeout: float = 120.0, *, require_models: bool = False) -> TritonServer:
        """Launch and wait until the server answers /v2/health/ready with every start-up load done.

        Raises ServerStartError (with the log tail) if the process dies or `timeout` passes; with
        `require_models`, also when a model failed to load.
        """
        if self.is_running:
            raise LauncherError(f"tritonserver already running (pid {self.pid})")
        if not self.model_repository.is_dir():
            raise FileNotFoundError(f"model repository not found: {self.model_repository}")
        env = server_environment(self.venv_python) | self.environment
        found = find_tritonserver(_interpreter(self.venv_python).version)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self._pick_ports()
            began = time.monotonic()
            self._launch(self.command(found), env)
            outcome = self._wait_ready(began + timeout)
            if outcome == "ready":
                break
            tail = self.log_tail()
            port_clash = outcome == "died" and _PORT_TAKEN in tail
            self.stop(grace_s=5)
            if port_clash and attempt < 2 and 0 in self._requested_ports.values():
                continue  # a port picked free was taken before tritonserver bound it: pick again
            what = "exited during start-up" if outcome == "died" else f"not ready after {timeout:.0f} s"
            raise ServerStartError(f"tritonserver {what} (log {self.log_path}):\n{tail}")
        self.startup_seconds = time.monotonic() - began
        self.failed_models = self._failed_startup_models()
        if self.failed_models and require_models:
            tail = self.log_tail()
            self.stop(grace_s=1)
            reasons = "\n".join(f"  {name}: {reason}" for name, reason in self.failed_models.items())
            raise ServerStartError(f"models failed to load:\n{reasons}\nlog {self.log_path}:\n{tail}")
        return self

    def _pick_ports(self) -> None:
        wanted = [name for name, port in self._requested_ports.items() if port == 0]
        picked = iter(free_ports(len(wanted), _connect_host(self.address)))
        for name, port in self._requested_ports.items():
            self.ports[name] = next(picked) if port == 0 else port

    def _launch(self, command: list[str], env: dict[str, str]) -> None:
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"# sessionrec launcher: {' '.join(command)}\n".encode())
            log.flush()
            # The child keeps its own copy of the log descriptor; ours closes at the end of `with`.
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,  # own process group: stop() reaches the stubs too
            )
        self._finalizer = weakref.finalize(self, _kill_group, self._process, self._shm_prefix)

    def _wait_ready(self, deadline: float) -> str:
        url = f"{self.http_url}/v2/health/ready"
        while True:
            if _exited(self._process):
                return "died"
            status = _http_status(url)
            # 400 = responding but some model is not ready. Triton opens its endpoints only after the
            # start-up loads finished, so any answer means they are done, failed ones included.
            # It opens them one after the other (metrics after HTTP): ready once every port accepts,
            # or a client scraping metrics right after start() found nothing listening.
            if status in (200, 400) and all(_accepts(host, port) for host, port in self._listeners()):
                return "ready"
            if time.monotonic() > deadline:
                return "timeout"
            time.sleep(0.05)

    def _listeners(self) -> list[tuple[str, int]]:
        """(host, port) a client here reaches each endpoint at; metrics only when not turned off."""
        found = [(_connect_host(self.address), self.ports["grpc"]), (_connect_host(self.http_address), self.ports["http"])]
        if "--allow-metrics=false" not in self.extra_args:
            found.append((_connect_host(self.http_address), self.ports["metrics"]))
        return found

    def _failed_startup_models(self) -> dict[str, str]:
        request = urllib.request.Request(f"{self.http_url}/v2/repository/index", data=b"{}", method="POST",
                                         headers=self.admin_headers)
        with _DIRECT.open(request, timeout=10) as response:
            index = json.load(response)
        failed = {entry["name"]: entry.get("reason", "") for entry in index if entry.get("state") != "READY"}
        if self.models is None:
            return failed
        known = {entry["name"] for entry in index}
        return {
            name: failed[name] if name in known else "not in the model repository"
            for name in self.models
            if name in failed or name not in known
        }

    def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM, then SIGKILL to the whole process group after `grace_s`; remove leftover shm.

        Graceful stop takes ~3 s here: tritonserver re-checks its live models once a second.
        """
        if self._client is not None:
            self._client.close()
            self._client = None
        process = self._process
        if process is None:
            return
        if not _exited(process):
            # The server alone: it unloads models and ends its stubs. Not Popen.send_signal, which
            # may reap the server and free its pid (= the group id) before the group is checked.
            os.kill(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + (grace_s if grace_s is not None else self.exit_timeout_s + 5)
            while not _exited(process) and time.monotonic() < deadline:
                time.sleep(0.05)
        _kill_group(process, self._shm_prefix)
        if self._finalizer is not None:
            self._finalizer.detach()
        self._process = None

    def wait(self) -> int:
        """Block until the server exits on its own (or is signalled); its exit status."""
        process = self._process
        if process is None:
            raise LauncherError("tritonserver is not running")
        while not _exited(process):
            time.sleep(0.2)
        return _exit_status(process)

    def __enter__(self) -> TritonServer:
        return self.start() if not self.is_running else self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ----------------------------------------------------------------- addresses and state

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def is_running(self) -> bool:
        return self._process is not None and not _exited(self._process)

    @property
    def grpc_url(self) -> str:
        """host:port, as tritonclient.grpc takes it."""
        return f"{_url_host(self.address)}:{self.ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"http://{_url_host(self.http_address)}:{self.ports['http']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_url_host(self.http_address)}:{self.ports['metrics']}/metrics"

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines this start wrote to the log."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @staticmethod
    def _default_log_path() -> Path:
        return Path(tempfile.gettempdir()) / f"tritonserver-{os.getpid()}-{secrets.token_hex(4)}.log"

    # ----------------------------------------------------------------- model control (gRPC)

    def client(self):
        """A tritonclient.grpc client for this server (TLS settings from `client_tls`), reused."""
        import tritonclient.grpc as grpcclient

        if self._client is None:
            if self.grpc_tls is not None and self.client_tls is None:
                raise LauncherError("this server speaks TLS: give TritonServer(client_tls=...) to use client()")
            kwargs = self.client_tls.grpc_kwargs() if self.grpc_tls is not None else {}
            self._client = grpcclient.InferenceServerClient(self.grpc_url, **kwargs)
        return self._client

    def load_model(self, name: str, config_json: str | dict | None = None) -> None:
        """Load `name`; `config_json` (a complete config) replaces its config.pbtxt.

        Returns once the model is ready; raises InferenceServerException with the load error.
        Loading a loaded model reloads it only if its files or the given config changed: to go back
        from a config override to config.pbtxt, unload first. The response cache is not flushed by a
        reload: a new model must come as a new version number, or cached answers stay in use.
        """
        if isinstance(config_json, dict):
            config_json = json.dumps(config_json)
        self.client().load_model(name, config=config_json)

    def unload_model(self, name: str, wait_s: float = 30.0) -> None:
        """Unload `name` and wait until its instances are gone (Triton's unload call returns at once)."""
        client = self.client()
        client.unload_model(name)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            states = {e.version: e.state for e in client.get_model_repository_index().models if e.name == name}
            if not any(state in ("READY", "UNLOADING") for state in states.values()):
                return
            time.sleep(0.05)
        raise LauncherError(f"model {name!r} still unloading after {wait_s:.0f} s")

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.client().is_model_ready(name, version)


# --------------------------------------------------------------------- process helpers


def _exited(process: subprocess.Popen) -> bool:
    """Has the server exited? Checked without reaping it: while it is an unreaped zombie its pid,
    which is also its process group id, cannot be reused, so killing the group stays safe."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _exit_status(process: subprocess.Popen) -> int:
    if process.returncode is not None:
        return process.returncode
    info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _kill_group(process: subprocess.Popen, shm_prefix: str) -> None:
    """SIGKILL whatever is left of the server's process group (orphaned stubs), reap, clean /dev/shm."""
    group = process.pid  # start_new_session: the server leads its own group
    if process.returncode is None:  # not reaped yet: the group id is still ours
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + 10
        while group_members(group, exclude=process.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    process.wait()
    if SHM_DIR.is_dir():
        for region in SHM_DIR.glob(f"{shm_prefix}*"):
            region.unlink(missing_ok=True)


def group_members(group: int, exclude: int | None = None) -> list[int]:
    """Live (not zombie) processes in process group `group`, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == group and fields[0] not in "ZX":
            members.append(int(entry.name))
    return members


# Loopback health checks must not go through an http_proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str) -> int | None:
    try:
        with _DIRECT.open(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None  # not listening yet


def _accepts(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port is accepted now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _connect_host(address: str) -> str:
    """Where a client on this machine reaches a listener bound to `address`."""
    return {"0.0.0.0": LOOPBACK, "::": "::1", "": LOOPBACK}.get(address, address)


def _url_host(address: str) -> str:
    host = _connect_host(address)
    return f"[{host}]" if ":" in host else host
