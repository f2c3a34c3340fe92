"""Triton `session_history`: the first step of `recommend_session` on the multi-step layouts (GPU).

Records each click event in Redis and outputs the session's clicks up to it (HISTORY, fed to the
preprocess step as its ITEMS), their count and the state (stored / duplicate / degraded /
not_stored). On the CPU layout the fused `session_recommender` does this itself. Logic:
sessionrec.serving.history. Redis settings come from the server's environment over this config's
parameters; nothing connects at load, so the server starts whether Redis is there or not.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from sessionrec.serving import history as history_lib
from sessionrec.serving import triton_io as io


class TritonPythonModel:
    def initialize(self, args):
        self.history = history_lib.for_model(lambda key, default: io.parameter(args, key, default))
        self.dtypes = io.output_dtypes(args, pb_utils)

    def execute(self, requests):
        # One Redis round trip for the whole batch; a malformed request gets its own error.
        answers = self.history.record_many([io.click_event(pb_utils, r, history_lib.ClickEvent) for r in requests])
        responses = []
        for answer in answers:
            if isinstance(answer, Exception):
                responses.append(io.error_response(pb_utils, str(answer)))
                continue
            responses.append(io.response(pb_utils, {
                "HISTORY": answer.items[None, :],
                "HISTORY_LENGTH": np.array([[answer.items.size]], dtype=np.int32),
                "HISTORY_STATE": np.array([[answer.state.encode()]], dtype=object)}, self.dtypes))
        return responses
