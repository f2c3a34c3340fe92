"""The launcher against the real tritonserver binary, with a tiny python-backend repository.

    .venv/bin/pytest tests/serving/test_launcher.py -q

`add_one` answers INPUT + increment (parameter, default 1) and a per-request error for negative
values; `broken` raises in initialize. Values are asserted, not just shapes: numpy 2.x in the
server's environment returns zeros with the right shapes.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sessionrec.serving import launcher
from sessionrec.serving.launcher import LauncherError, ServerStartError, TritonServer, group_members
from sessionrec.serving.tls import generate_self_signed

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

ADD_ONE_CONFIG = """
name: "add_one"
backend: "python"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 20000 }
input [ { name: "INPUT" data_type: TYPE_INT64 dims: [ -1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT64 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
response_cache { enable: true }
"""

ADD_ONE_MODEL = '''
import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.increment = int(config.get("parameters", {}).get("increment", {}).get("string_value", "1"))

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            if (values < 0).any():
                error = pb_utils.TritonError(f"add_one: negative value {int(values.min())} in INPUT")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, values + self.increment)]))
        return responses
'''

BROKEN_MODEL = '''
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("broken on purpose")
'''


def write_repository(root: Path, broken: bool = False) -> Path:
    models = {"add_one": (ADD_ONE_CONFIG, ADD_ONE_MODEL)}
    if broken:
        models["broken"] = (ADD_ONE_CONFIG.replace('"add_one"', '"broken"'), BROKEN_MODEL)
    for name, (config, code) in models.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
        (root / name / "1" / "model.py").write_text(code)
    return root


def add_one(client, values, **kwargs) -> np.ndarray:
    batch = np.asarray(values, dtype=np.int64)[None, :]
    tensor = grpcclient.InferInput("INPUT", batch.shape, "INT64")
    tensor.set_data_from_numpy(batch)
    return client.infer("add_one", [tensor], **kwargs).as_numpy("OUTPUT")[0]


def stray_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker` (the repository path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state not in "ZX":
            found.append(cmdline)
    return found


def shm_regions(server: TritonServer) -> list[str]:
    return [p.name for p in Path("/dev/shm").glob(f"{server._shm_prefix}*")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    repository = write_repository(root / "repository", broken=True)
    with TritonServer(repository, response_cache_bytes=1 << 20, log_file=root / "server.log") as running:
        yield running


# ------------------------------------------------------------------ without a server


def test_find_tritonserver_prepares_python_backend():
    found = launcher.find_tritonserver()
    stub = found.backend_dir / "python" / launcher.STUB_NAME
    source = found.binary.parent.parent / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert os.access(found.binary, os.X_OK) and os.access(stub, os.X_OK)
    assert stub.read_bytes() == (source / launcher.STUB_NAME).read_bytes()
    assert (found.libs_dir).is_dir() and (found.cache_dir / "local").is_dir()
    assert launcher.find_tritonserver() == found  # idempotent


def test_stub_install_survives_a_race(tmp_path):
    source = tmp_path / "stub-source"
    source.write_bytes(os.urandom(1 << 20))
    target = tmp_path / "backend" / launcher.STUB_NAME
    target.parent.mkdir()
    target.write_bytes(b"stale stub of another Python")
    threads = [threading.Thread(target=launcher._install_stub, args=(source, target)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.read_bytes() == source.read_bytes() and os.access(target, os.X_OK)
    assert os.listdir(target.parent) == [launcher.STUB_NAME]  # no temporary files left


def test_missing_wheel_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(launcher.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LauncherError, match="nvidia-pytriton"):
        launcher.find_tritonserver()


@pytest.mark.parametrize(
    "numpy_init, message",
    [('__version__ = "2.1.0"\n', "numpy 2.1.0"), ('raise ImportError("no numpy here")\n', "does not import")],
)
def test_server_environment_refuses_bad_numpy(tmp_path, numpy_init, message):
    fake = tmp_path / "fake" / "numpy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(numpy_init)
    python3 = tmp_path / "venv" / "bin" / "python3"
    python3.parent.mkdir(parents=True)
    python3.write_text(f'#!/bin/sh\nPYTHONPATH="{fake.parent}" exec "{sys.executable}" "$@"\n')
    python3.chmod(0o755)
    with pytest.raises(LauncherError, match=message):
        launcher.server_environment(python3)


def test_server_environment_puts_the_venv_first():
    env = launcher.server_environment()
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(os.path.abspath(sys.executable))
    libs = env["LD_LIBRARY_PATH"].split(os.pathsep)
    import sysconfig

    assert libs[0] == sysconfig.get_config_var("LIBDIR")
    assert any(p.endswith("nvidia_pytriton.libs") for p in libs)


def test_server_environment_limits_numpy_blas_threads_unless_set(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert launcher.server_environment()["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")  # the operator's choice wins
    assert launcher.server_environment()["OPENBLAS_NUM_THREADS"] == "4"


def test_command_line_flags(tmp_path):
    bundle = generate_self_signed(tmp_path / "tls")
    server = TritonServer(tmp_path, models=["a", "b"], grpc_tls=bundle.server_tls(mutual=True))
    command = server.command()
    for flag in ("--grpc-address=127.0.0.1", "--http-address=127.0.0.1", "--metrics-address=127.0.0.1",
                 "--model-control-mode=explicit", "--load-model=a", "--load-model=b",
                 "--exit-on-error=false", "--disable-auto-complete-config", "--grpc-use-ssl=true",
                 f"--grpc-root-cert={bundle.ca_cert}", "--grpc-use-ssl-mutual=true"):
        assert flag in command
    assert not any("0.0.0.0" in arg for arg in command)
    assert "--load-model=*" in TritonServer(tmp_path).command()


def test_ready_waits_for_every_endpoint_it_opens(tmp_path):
    # Triton opens its endpoints one after the other; start() returns once all of them accept.
    server = TritonServer(tmp_path)
    assert sorted(port for _, port in server._listeners()) == sorted(server.ports.values())
    no_metrics = TritonServer(tmp_path, extra_args=["--allow-metrics=false"])
    assert [port for _, port in no_metrics._listeners()] == [no_metrics.ports["grpc"], no_metrics.ports["http"]]


# ------------------------------------------------------------------ one shared server


@pytest.mark.server
def test_listens_on_loopback_only(server):
    assert server.grpc_url.startswith("127.0.0.1:") and server.http_url.startswith("http://127.0.0.1:")
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                address, port = local.rsplit(":", 1)
                listening.setdefault(int(port, 16), set()).add(address)
    # 127.0.0.1 as /proc writes it: little-endian hex, or IPv4-mapped on the IPv6 socket gRPC opens.
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}
    for port in server.ports.values():
        assert listening[port] and listening[port] <= loopback, listening[port]
    print(f"tritonserver ready after {server.startup_seconds:.2f} s")


@pytest.mark.server
def test_answers_values_not_just_shapes(server):
    client = server.client()
    for values in ([1, 2, 3], [0], list(range(50)), [2**40, 7, 2**62]):
        result = add_one(client, values)
        assert result.dtype == np.int64
        np.testing.assert_array_equal(result, np.asarray(values, dtype=np.int64) + 1)


@pytest.mark.server
def test_bad_model_does_not_stop_the_others(server):
    assert "broken on purpose" in server.failed_models["broken"]
    assert server.model_ready("add_one") and not server.model_ready("broken")
    with pytest.raises(InferenceServerException, match="broken on purpose"):
        server.load_model("broken")
    np.testing.assert_array_equal(add_one(server.client(), [5]), [6])


@pytest.mark.server
def test_per_request_error_comes_back_alone(server):
    """A bad request batched with a good one fails alone, with the model's message."""
    client = server.client()
    results: queue.Queue = queue.Queue()
    for values in ([-3, 4], [10, 11]):
        batch = np.asarray([values], dtype=np.int64)
        tensor = grpcclient.InferInput("INPUT", batch.shape, "INT64")
        tensor.set_data_from_numpy(batch)
        client.async_infer("add_one", [tensor], lambda result, error, v=values: results.put((v, result, error)))
    outcome = {tuple(v): (result, error) for v, result, error in (results.get(timeout=30) for _ in range(2))}
    result, error = outcome[(-3, 4)]
    assert result is None and "add_one: negative value -3 in INPUT" in error.message()
    result, error = outcome[(10, 11)]
    assert error is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT")[0], [11, 12])
    with pytest.raises(InferenceServerException, match="negative value -1"):
        add_one(client, [-1])


@pytest.mark.server
def test_reload_with_config_override_then_unload(server):
    """Inputs differ at every step: the response cache would answer a repeat from before the reload."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(ADD_ONE_CONFIG, model_config_pb2.ModelConfig())
    config.parameters["increment"].string_value = "5"
    try:
        server.load_model("add_one", json_format.MessageToJson(config, preserving_proto_field_name=True))
        np.testing.assert_array_equal(add_one(server.client(), [1001, 1002]), [1006, 1007])
        server.load_model("add_one")  # files unchanged: a no-op, the override stays
        np.testing.assert_array_equal(add_one(server.client(), [1003]), [1008])
    finally:
        server.unload_model("add_one")  # only unload + load goes back to config.pbtxt
        assert not server.model_ready("add_one")
        server.load_model("add_one")
    np.testing.assert_array_equal(add_one(server.client(), [1004, 1005]), [1005, 1006])


@pytest.mark.server
def test_response_cache_is_on(server):
    import urllib.request

    for _ in range(2):
        np.testing.assert_array_equal(add_one(server.client(), [123, 456]), [124, 457])
    metrics = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    hits = [line for line in metrics.splitlines() if line.startswith("nv_cache_num_hits_per_model{model=\"add_one\"")]
    assert hits and float(hits[0].rsplit(" ", 1)[1]) >= 1, metrics[:2000]


# ------------------------------------------------------------------ start and stop


@pytest.mark.server
def test_stop_leaves_no_process_or_shared_memory(tmp_path):
    repository = write_repository(tmp_path / "repository")
    server = TritonServer(repository, models=["add_one"], log_file=tmp_path / "server.log").start()
    pid = server.pid
    assert group_members(pid, exclude=pid), "a python backend stub should run in the server's group"
    assert shm_regions(server)
    server.stop()
    assert group_members(pid) == [] and stray_processes(str(repository)) == [] and shm_regions(server) == []
    assert not server.is_running and server.pid is None


@pytest.mark.server
def test_stop_after_the_server_was_killed_reaps_orphaned_stubs(tmp_path):
    repository = write_repository(tmp_path / "repository")
    server = TritonServer(repository, models=["add_one"], log_file=tmp_path / "server.log").start()
    pid = server.pid
    os.kill(pid, signal.SIGKILL)  # the stub is orphaned and its shared memory left behind
    deadline = time.monotonic() + 10
    while server.is_running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stray_processes(str(repository)) and shm_regions(server)
    server.stop()
    assert group_members(pid) == [] and stray_processes(str(repository)) == [] and shm_regions(server) == []


@pytest.mark.server
def test_start_failure_reports_the_log_tail(tmp_path):
    repository = write_repository(tmp_path / "repository")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = TritonServer(repository, models=[], grpc_port=taken.getsockname()[1], log_file=tmp_path / "log")
        with pytest.raises(ServerStartError, match="already in use"):
            server.start()
    assert not server.is_running


@pytest.mark.server
def test_port_taken_meanwhile_is_picked_again(tmp_path, monkeypatch):
    repository = write_repository(tmp_path / "repository")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        real = launcher.free_ports
        calls = []

        def racy_free_ports(count, host):
            calls.append(count)
            ports = real(count, host)
            return [taken.getsockname()[1], *ports[1:]] if len(calls) == 1 else ports

        monkeypatch.setattr(launcher, "free_ports", racy_free_ports)
        with TritonServer(repository, models=[], log_file=tmp_path / "log") as server:
            assert len(calls) == 2 and server.ports["grpc"] != taken.getsockname()[1]
            assert server.client().is_server_ready()


@pytest.mark.server
def test_require_models_fails_start_on_a_broken_model(tmp_path):
    repository = write_repository(tmp_path / "repository", broken=True)
    server = TritonServer(repository, models=["add_one", "broken", "absent"], log_file=tmp_path / "log")
    with pytest.raises(ServerStartError, match="broken on purpose") as caught:
        server.start(require_models=True)
    assert "absent: not in the model repository" in str(caught.value)
    assert not server.is_running and stray_processes(str(repository)) == []


# ------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def tls_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    return write_repository(root / "repository"), generate_self_signed(root / "certs"), root


@pytest.mark.server
def test_tls_server_verified_by_the_ca(tls_setup):
    repository, bundle, root = tls_setup
    other_ca = generate_self_signed(root / "other")
    with TritonServer(repository, models=["add_one"], grpc_tls=bundle.server_tls(),
                      client_tls=bundle.client_tls(), log_file=root / "tls.log") as server:
        np.testing.assert_array_equal(add_one(server.client(), [1, 41]), [2, 42])
        with grpcclient.InferenceServerClient(server.grpc_url) as plain:
            with pytest.raises(InferenceServerException):
                add_one(plain, [1], client_timeout=5)
        with grpcclient.InferenceServerClient(server.grpc_url, **other_ca.client_tls().grpc_kwargs()) as wrong:
            with pytest.raises(InferenceServerException):
                add_one(wrong, [1], client_timeout=5)


@pytest.mark.server
def test_mutual_tls_needs_a_client_certificate(tls_setup):
    repository, bundle, root = tls_setup
    with TritonServer(repository, models=["add_one"], grpc_tls=bundle.server_tls(mutual=True),
                      client_tls=bundle.client_tls(with_certificate=True), log_file=root / "mtls.log") as server:
        np.testing.assert_array_equal(add_one(server.client(), [7]), [8])
        with grpcclient.InferenceServerClient(server.grpc_url, **bundle.client_tls().grpc_kwargs()) as anonymous:
            with pytest.raises(InferenceServerException):
                add_one(anonymous, [1], client_timeout=5)


def test_key_files_are_private(tmp_path):
    bundle = generate_self_signed(tmp_path)
    assert (bundle.server_key.stat().st_mode & 0o777) == 0o600
    assert (bundle.client_key.stat().st_mode & 0o777) == 0o600
    assert not list(tmp_path.glob("ca.key"))
    json.dumps(bundle.client_tls(with_certificate=True).grpc_kwargs())  # plain strings, usable anywhere
