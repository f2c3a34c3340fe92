"""Triton `session_history`: the first step of `recommend_session` on the multi-step layouts (GPU).

Records each click event in Redis and outputs the session's clicks up to it (HISTORY, fed to the
preprocess step as its ITEMS), their count and the state (stored / duplicate / degraded /
not_stored), and `canary` (the event is one of the server's canary replays: the steps after it
leave it out of the monitoring signals). On the CPU layout the fused `session_recommender` does
this itself. Logic: sessionrec.serving.history. Redis settings come from the server's environment
over this config's parameters; nothing connects at load, so the server starts whether Redis is there or not.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from sessionrec.monitoring import signals
from sessionrec.serving import history as history_lib
from sessionrec.serving import triton_io as io


class TritonPythonModel:
    def initialize(self, args):
        # No speculation here: the encoder is the next step, so nothing would overlap the round trip.
        self.history = history_lib.for_model(lambda key, default: io.parameter(args, key, default),
                                            history_lib.model_max_len(io.version_dir(args)), speculate=False)
        self.history.warm_in_background()  # the first event is one round trip; start never waits for it
        self.dtypes = io.output_dtypes(args, pb_utils)
        # History states and the events' clicks by popularity bucket (sessionrec.monitoring.signals);
        # None when SESSIONREC_MONITORING=off.
        self.monitor = signals.for_three_step("session_history", io.version_dir(args), pb_utils,
                                              model_config=json.loads(args["model_config"]))

    def execute(self, requests):
        # One Redis round trip for the whole batch; a malformed request gets its own error.
        events = [io.click_event(pb_utils, r, history_lib.ClickEvent) for r in requests]
        answers = self.history.record_many(events)
        if self.monitor is not None:
            self.monitor.observe_history(events, answers)
            self.monitor.maybe_flush()
        responses = []
        for event, answer in zip(events, answers):
            if isinstance(answer, Exception):
                responses.append(io.error_response(pb_utils, str(answer)))
                continue
            responses.append(io.response(pb_utils, {
                "HISTORY": answer.items[None, :],
                "HISTORY_LENGTH": np.array([[answer.items.size]], dtype=np.int32),
                "HISTORY_STATE": np.array([[answer.state.encode()]], dtype=object),
                "canary": np.array([[signals.is_canary(event)]])}, self.dtypes))
        return responses

    def finalize(self):
        # Metrics before their families (signals.TritonSink.close): the unload-time crash of custom metrics.
        if getattr(self, "monitor", None) is not None:
            self.monitor.close()
            self.monitor = None
