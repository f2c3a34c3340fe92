"""Triton `preprocess`: raw item ids -> session graph tensors. Logic: sessionrec.serving.preprocess."""

import triton_python_backend_utils as pb_utils

from sessionrec.serving import triton_io as io
from sessionrec.serving.artifacts import load_preprocessor
from sessionrec.serving.preprocess import RequestError


class TritonPythonModel:
    def initialize(self, args):
        # Verifies the version's artifacts against the manifest's checksums before serving them.
        self.preprocessor = load_preprocessor(io.version_dir(args))
        self.dtypes = io.output_dtypes(args, pb_utils)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                arrays = self.preprocessor.process(io.input_array(pb_utils, request, "ITEMS"))
            except RequestError as exc:
                responses.append(io.error_response(pb_utils, str(exc)))
                continue
            responses.append(io.response(pb_utils, arrays, self.dtypes))
        return responses
