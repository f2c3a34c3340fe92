"""The encoder on CPU: the exported ONNX file in onnxruntime (the embedded server's session_encoder).

On a GPU cluster Triton's onnxruntime (TensorRT accelerator) or tensorrt_plan backends run the same
file; here only the python backend exists, so this class runs it in-process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

class OnnxEncoder:
    def __init__(self, path: str | Path, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One intra-op thread per instance: Triton runs several instances and requests in parallel,
        # and on 2 cores a thread pool per instance only adds contention.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.output = self.session.get_outputs()[0].name
        # The file's own input names: they are its input schema's (sessionrec.schemas), whichever it is.
        self.inputs = tuple(i.name for i in self.session.get_inputs())

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: np.ascontiguousarray(inputs[name]) for name in self.inputs}
        return self.session.run([self.output], feed)[0]
