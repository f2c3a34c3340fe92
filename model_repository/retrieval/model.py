"""Triton `retrieval`: session vectors -> top-K raw ids and scores. Logic: sessionrec.serving.retrieval."""

import json

import triton_python_backend_utils as pb_utils

from sessionrec.monitoring import signals
from sessionrec.serving import triton_io as io
from sessionrec.serving.artifacts import load_retriever
from sessionrec.serving.preprocess import RequestError
from sessionrec.serving.shards import ShardUnavailable

INPUTS = ("session_embedding", "items", "fallback", "K", "EXCLUDE_SEEN")


class TritonPythonModel:
    def initialize(self, args):
        # FAISS is imported and the index read at the lowest CPU priority: a switch leaves the cores to serving.
        self.retriever = io.load_at_low_priority(lambda: load_retriever(io.version_dir(args)))
        self.dtypes = io.output_dtypes(args, pb_utils)
        self.retriever.warm_up(io.max_batch_size(args))  # here, on the serving thread
        # Score and recommendation-popularity signals (sessionrec.monitoring.signals), flushed at most
        # once a second through Triton's custom metrics; None when SESSIONREC_MONITORING=off.
        self.monitor = signals.for_three_step("retrieval", io.version_dir(args), pb_utils,
                                              model_config=json.loads(args["model_config"]), retriever=self.retriever)

    def answer(self, request):
        try:
            x = {name: io.input_array(pb_utils, request, name) for name in INPUTS}
            return self.retriever.retrieve_request(x["session_embedding"], x["items"], x["fallback"], x["K"],
                                                   x["EXCLUDE_SEEN"])
        except (RequestError, ShardUnavailable) as exc:  # a shard server down: UNAVAILABLE, this request
            return exc

    def execute(self, requests):
        outs = [self.answer(r) for r in requests]
        if self.monitor is not None:
            # `canary`: mapped by recommend_session only (from session_history); true for canary replays.
            self.monitor.observe_retrieval([io.optional_array(pb_utils, r, "canary") for r in requests], outs)
            self.monitor.maybe_flush()
        return [io.error_for(pb_utils, out) if isinstance(out, Exception)  # UNAVAILABLE: a shard down
                else io.response(pb_utils, {"ITEM_IDS": out[0], "SCORES": out[1]}, self.dtypes) for out in outs]

    def finalize(self):
        # Metrics before their families (signals.TritonSink.close): the unload-time crash of custom metrics.
        if getattr(self, "monitor", None) is not None:
            self.monitor.close()
            self.monitor = None
