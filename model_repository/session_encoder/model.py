"""Triton `session_encoder` on CPU: model.onnx in onnxruntime. Logic: sessionrec.serving.encoder.

On a GPU cluster configs/gpu.pbtxt serves the same model.onnx with the onnxruntime backend instead.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from sessionrec.serving import triton_io as io
from sessionrec.serving.artifacts import load_encoder


class TritonPythonModel:
    def initialize(self, args):
        threads = int(io.parameter(args, "intra_op_threads", "1"))
        # onnxruntime is imported and the session built at the lowest CPU priority (serving keeps the cores).
        self.encoder = io.load_at_low_priority(lambda: load_encoder(io.version_dir(args), threads=threads))
        self.dtypes = io.output_dtypes(args, pb_utils)

    def execute(self, requests):
        # Preprocess pads every session to max_len, so the batch concatenates into one ORT call.
        # Input names are the version's schema's (sessionrec.schemas), read from the ONNX file.
        names = self.encoder.inputs
        inputs = [{name: io.input_array(pb_utils, r, name) for name in names} for r in requests]
        sizes = [x["items"].shape[0] for x in inputs]
        batch = {name: np.concatenate([x[name] for x in inputs]) for name in names}
        vectors = self.encoder(batch)
        out, start = [], 0
        for size in sizes:
            out.append(io.response(pb_utils, {"session_embedding": vectors[start : start + size]}, self.dtypes))
            start += size
        return out
