"""Triton `preprocess`: raw item ids -> session graph tensors. Logic: sessionrec.serving.preprocess."""

import json

import triton_python_backend_utils as pb_utils

from sessionrec.monitoring import signals
from sessionrec.serving import triton_io as io
from sessionrec.serving.artifacts import load_preprocessor
from sessionrec.serving.preprocess import RequestError


class TritonPythonModel:
    def initialize(self, args):
        # Verifies the version's artifacts against the manifest's checksums before serving them.
        self.preprocessor = load_preprocessor(io.version_dir(args))
        self.dtypes = io.output_dtypes(args, pb_utils)
        # Input drift signals (clicks by popularity bucket, unknown ids, fallback, session length),
        # flushed at most once a second through Triton's custom metrics; None when SESSIONREC_MONITORING=off.
        self.monitor = signals.for_three_step("preprocess", io.version_dir(args), pb_utils,
                                              model_config=json.loads(args["model_config"]))

    def answer(self, items):
        try:
            return self.preprocessor.process(items)
        except RequestError as exc:
            return exc

    def execute(self, requests):
        items = [io.input_array(pb_utils, r, "ITEMS") for r in requests]
        outs = [self.answer(i) for i in items]
        if self.monitor is not None:
            # `canary`: mapped by recommend_session only (from session_history): an event, and whether
            # it is one of the server's canary replays (signals.ServingMonitor.observe_preprocess).
            self.monitor.observe_preprocess([(i, io.optional_array(pb_utils, r, "canary")) for i, r in zip(items, requests)],
                                            outs)
            self.monitor.maybe_flush()
        return [io.error_response(pb_utils, str(out)) if isinstance(out, Exception)
                else io.response(pb_utils, out, self.dtypes) for out in outs]

    def finalize(self):
        # Metrics before their families (signals.TritonSink.close): the unload-time crash of custom metrics.
        if getattr(self, "monitor", None) is not None:
            self.monitor.close()
            self.monitor = None
