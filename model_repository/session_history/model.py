"""Triton `session_history`: the recommend_session ensemble's first step. Logic: sessionrec.serving.history.

Records each click event in Redis and outputs the session's clicks up to it (HISTORY, fed to the
recommender as its ITEMS), their count and the state (stored / duplicate / degraded / not_stored).
Redis settings come from the server's environment over this config's parameters; nothing here
connects at load, so the server starts whether Redis is there or not.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from sessionrec.serving import triton_io as io
from sessionrec.serving.history import ClickEvent, HistoryConfig, SessionHistory


class TritonPythonModel:
    def initialize(self, args):
        defaults = HistoryConfig(max_len=int(io.parameter(args, "max_len", "50")),
                                 ttl_s=float(io.parameter(args, "ttl_s", "1800")),
                                 timeout_ms=float(io.parameter(args, "timeout_ms", "20")))
        self.history = SessionHistory(HistoryConfig.from_environment(defaults))
        self.dtypes = io.output_dtypes(args, pb_utils)

    def execute(self, requests):
        # One Redis round trip for the whole batch; a malformed request gets its own error.
        answers = self.history.record_many([io.click_event(pb_utils, r, ClickEvent) for r in requests])
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
