"""Raw `recommend` requests over gRPC, well-formed or not, sent together so the batcher groups them.

    requests = [RawRequest.recommend([[84051, 14513]], k=20), RawRequest.recommend([[]], k=5)]
    with RawChannel(server.grpc_url) as channel:
        outcomes = channel.send_together(requests)        # one Outcome per request, in order

The client libraries refuse malformed input before sending it (tritonclient checks numpy dtypes and
shapes, sessionrec.clients checks ids and K); these requests are protobuf messages built field by
field (KServe v2 `ModelInferRequest`), so any datatype, declared shape, byte count or missing input
reaches the server exactly as written. `send_together` issues every request before waiting for any:
they arrive within a millisecond or two, and the dynamic batchers of the steps group good and bad
requests into the same executions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

MODEL = "recommend"
# KServe v2 datatype -> numpy dtype, for the raw bytes of a tensor.
NUMPY = {"BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
         "UINT8": np.uint8, "UINT32": np.uint32, "UINT64": np.uint64, "FP16": np.float16, "FP32": np.float32,
         "FP64": np.float64}


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str  # as declared to the server ("INT64", "FP32", "BYTES", ...)
    shape: tuple[int, ...]  # as declared (may disagree with the bytes, on purpose)
    content: bytes

    @classmethod
    def of(cls, name: str, array: np.ndarray, datatype: str | None = None, shape: Sequence[int] | None = None) -> "Tensor":
        """`array`'s bytes, declared as `datatype` and `shape` (default: its own)."""
        array = np.ascontiguousarray(array)
        if datatype is None:
            datatype = next(k for k, v in NUMPY.items() if np.dtype(v) == array.dtype)
        if datatype == "BYTES":  # length-prefixed elements, as tritonclient serializes them
            content = b"".join(len(e).to_bytes(4, "little") + e for e in (bytes(x) for x in array.reshape(-1)))
        else:
            content = array.tobytes()
        return cls(name, datatype, tuple(int(d) for d in (array.shape if shape is None else shape)), content)


@dataclass(frozen=True)
class RawRequest:
    tensors: tuple[Tensor, ...]
    model: str = MODEL

    @classmethod
    def recommend(cls, items, k=20, exclude_seen=False) -> "RawRequest":
        """A well-formed request: `items` is (B, n) raw ids; K and EXCLUDE_SEEN per row (scalar = all rows)."""
        items = np.asarray(items, dtype=np.int64)
        items = items if items.ndim == 2 else items.reshape(len(items), -1)
        rows = items.shape[0]
        k = np.broadcast_to(np.asarray(k, dtype=np.int32).reshape(-1, 1), (rows, 1))
        exclude = np.broadcast_to(np.asarray(exclude_seen, dtype=bool).reshape(-1, 1), (rows, 1))
        return cls((Tensor.of("ITEMS", items), Tensor.of("K", k), Tensor.of("EXCLUDE_SEEN", exclude)))

    def message(self):
        from tritonclient.grpc import service_pb2

        request = service_pb2.ModelInferRequest(model_name=self.model)
        for tensor in self.tensors:
            entry = request.inputs.add()
            entry.name, entry.datatype = tensor.name, tensor.datatype
            entry.shape.extend(tensor.shape)
            request.raw_input_contents.append(tensor.content)
        return request


@dataclass
class Outcome:
    code: str  # "OK" or the gRPC status name
    message: str = ""
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.code == "OK"


def parse_response(response) -> dict[str, np.ndarray]:
    out = {}
    for index, tensor in enumerate(response.outputs):
        dtype = NUMPY[tensor.datatype]
        out[tensor.name] = np.frombuffer(response.raw_output_contents[index], dtype=dtype).reshape(tuple(tensor.shape))
    return out


class RawChannel:
    """One gRPC channel to the server's inference service (plaintext, or TLS with `root_certificates`)."""

    def __init__(self, url: str, root_certificates: bytes | None = None, timeout_s: float = 30.0):
        import grpc
        from tritonclient.grpc import service_pb2_grpc

        options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        if root_certificates is None:
            self._channel = grpc.insecure_channel(url, options=options)
        else:
            self._channel = grpc.secure_channel(url, grpc.ssl_channel_credentials(root_certificates), options=options)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self.timeout_s = timeout_s

    def send_together(self, requests: Sequence[RawRequest]) -> list[Outcome]:
        """Issue every request, then collect every answer (in the order given)."""
        import grpc

        messages = [r.message() for r in requests]  # built before the first is sent: they leave together
        started = time.monotonic()
        futures = [self._stub.ModelInfer.future(m, timeout=self.timeout_s) for m in messages]
        outcomes = []
        for future in futures:
            try:
                response = future.result()
            except grpc.RpcError as exc:
                outcomes.append(Outcome(exc.code().name, exc.details() or "", latency_s=time.monotonic() - started))
                continue
            outcomes.append(Outcome("OK", outputs=parse_response(response), latency_s=time.monotonic() - started))
        return outcomes

    def send(self, request: RawRequest) -> Outcome:
        return self.send_together([request])[0]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "RawChannel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
