"""Client-test fixtures. `fake_triton`: a scripted stand-in for tritonserver's gRPC ModelInfer, for client
behaviour a real server cannot be made to show on demand (RESOURCE_EXHAUSTED, a broken answer, several
replicas behind one target). Everything else is tested against the real server (tests/conftest.py).

    def test_x(fake_triton):
        fake = fake_triton(failures=["RESOURCE_EXHAUSTED"])   # first call fails, later ones answer
        RecommendClient(fake.url).recommend([1, 2])

Answers follow the `recommend` contract: item i of K is (first input id * 100 + i), score K - i.
"""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc


class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, failures=(), broken: bool = False, tls=None, name: str = "fake"):
        self.failures = list(failures)  # status code names (or (name, message)), consumed one per call
        self.broken = broken  # answer SCORES with a different length than ITEM_IDS
        self.name = name
        self.calls = 0
        self.peers: set[str] = set()
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self, self._server)
        if tls is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
        else:  # tls: a SelfSignedBundle
            credentials = grpc.ssl_server_credentials([(tls.server_key.read_bytes(), tls.server_cert.read_bytes())])
            self.port = self._server.add_secure_port("127.0.0.1:0", credentials)
        self.url = f"127.0.0.1:{self.port}"

    def __enter__(self) -> "FakeTriton":
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(grace=None)

    def ModelInfer(self, request, context):
        with self._lock:
            self.calls += 1
            self.peers.add(context.peer())
            failure = self.failures.pop(0) if self.failures else None
        if failure:  # "CODE" or ("CODE", "message")
            code, message = failure if isinstance(failure, tuple) else (failure, f"scripted {failure} from {self.name}")
            context.abort(getattr(grpc.StatusCode, code), message)
        items_shape = list(request.inputs[0].shape)
        batch = items_shape[0]
        items = np.frombuffer(request.raw_input_contents[0], dtype=np.int64).reshape(items_shape)
        k = int(np.frombuffer(request.raw_input_contents[1], dtype=np.int32)[0])
        ids = (items[:, :1] * 100 + np.arange(k)).astype(np.int64)
        scores = np.tile(np.arange(k, 0, -1, dtype=np.float32), (batch, 1))
        if self.broken:
            scores = scores[:, :-1]
        response = service_pb2.ModelInferResponse(model_name=request.model_name, model_version="1")
        for name, datatype, array in (
            ("ITEM_IDS", "INT64", ids), ("SCORES", "FP32", scores),
            ("UNKNOWN_COUNT", "INT32", np.zeros((batch, 1), np.int32)), ("FALLBACK", "BOOL", np.zeros((batch, 1), bool)),
        ):
            output = response.outputs.add(name=name, datatype=datatype)
            output.shape.extend(array.shape)
            response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
        return response


@pytest.fixture
def fake_triton():
    """Factory: fake_triton(failures=[...], broken=False, tls=None) -> a started FakeTriton."""
    started = []

    def start(**kwargs) -> FakeTriton:
        fake = FakeTriton(**kwargs).__enter__()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.__exit__()
