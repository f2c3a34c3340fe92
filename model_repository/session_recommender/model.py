"""Triton `session_recommender`: the CPU ensemble's one step. Logic: sessionrec.serving.pipeline.

Reads the version's artifacts from the sibling step folders (preprocess/<N>, session_encoder/<N>,
retrieval/<N>), or from <N>/steps/ where the Helm chart moves them, each verified against its
manifest's checksums, and answers the ensemble's outputs.
"""

import json

import triton_python_backend_utils as pb_utils

from sessionrec.serving import triton_io as io  # light: the heavy imports happen in load() below


def load(root, version: int, threads: int):
    from sessionrec.serving.pipeline import LocalPipeline  # onnxruntime, FAISS

    return LocalPipeline(root, version, threads=threads)


class TritonPythonModel:
    def initialize(self, args):
        version_dir = io.version_dir(args)
        # <repository>/session_recommender/<N> -> <repository>, where the step folders are; the
        # chart's prepare step moves them into <N>/steps/ so that Triton does not load them as models.
        root = version_dir / "steps" if (version_dir / "steps").is_dir() else version_dir.parent.parent
        threads = int(io.parameter(args, "intra_op_threads", "1"))
        # Imports and artifacts at the lowest CPU priority: during a switch the serving stub keeps the cores.
        self.pipeline = io.load_at_low_priority(lambda: load(root, int(args["model_version"]), threads))
        self.pipeline.warm_up(io.max_batch_size(args))  # here, on the serving thread
        from sessionrec.serving.pipeline import PipelineRequest  # imported by load() already

        self.request = PipelineRequest
        self.dtypes = io.output_dtypes(args, pb_utils)
        # recommend_session events (SESSION_ID present) look their history up here, in this stub;
        # a background thread connects, so `recommend` and start never depend on Redis.
        from sessionrec.serving import history, stateful

        self.history = history.for_model(lambda k, d: io.parameter(args, k, d), self.pipeline.preprocessor.max_len)
        self.history.warm_in_background()  # so the first event is one round trip; start never waits for it
        self.stateful, self.event = stateful, history.ClickEvent
        # Drift and quality signals, aggregated here and flushed at most once a second through
        # Triton's custom metrics; None when the server's environment has SESSIONREC_MONITORING=off.
        from sessionrec.monitoring import signals
        from sessionrec.serving.artifacts import read_manifest

        self.monitor = signals.for_step(self.pipeline, args["model_version"],
                                        read_manifest(root / "preprocess" / args["model_version"]), pb_utils,
                                        model_config=json.loads(args["model_config"]))

        # Stage spans (history lookup, preprocess, encoder, FAISS) under Triton's span of each traced
        # request; None when the server runs without tracing (SESSIONREC_TRACING_ENDPOINT unset).
        from sessionrec.serving import tracing

        self.tracing, self.tracer = tracing, tracing.for_step(args["model_version"])

    def execute(self, requests):
        traced = None
        if self.tracer is not None:  # Triton decided, once per request, which ones it traces
            traced = [self.tracing.request_context(r) for r in requests]
            self.pipeline.clock = self.tracing.StageClock() if any(traced) else None
        # Triton rejects a request missing a required input before it gets here.
        batch = []
        for r in requests:
            event = io.click_event(pb_utils, r, self.event) if io.optional_array(pb_utils, r, "SESSION_ID") is not None else None
            batch.append(self.stateful.StepRequest(io.optional_array(pb_utils, r, "ITEMS"), io.input_array(pb_utils, r, "K"),
                                                   io.input_array(pb_utils, r, "EXCLUDE_SEEN"), event))
        responses = []
        outs = self.stateful.recommend_with_history(self.pipeline, self.history, batch)
        if self.monitor is not None:
            self.monitor.observe_step(batch, outs)
            self.monitor.observe_predictions(self.history.predictions)
            self.monitor.maybe_flush()
        if self.pipeline.clock is not None:
            self.tracer.emit(self.tracer.contexts(traced), self.pipeline.clock.marks, len(requests))
            self.pipeline.clock = None
        for request, out in zip(requests, outs):
            if isinstance(out, Exception):
                responses.append(io.error_for(pb_utils, out))  # UNAVAILABLE for a shard that is down
                continue
            answer = out.answer
            responses.append(io.response(pb_utils, {
                "ITEM_IDS": answer.item_ids, "SCORES": answer.scores, "UNKNOWN_COUNT": answer.unknown_count,
                "FALLBACK": answer.fallback, "HISTORY_LENGTH": out.history_length,
                "HISTORY_STATE": out.history_state}, self.dtypes, io.requested_outputs(request)))
        return responses

    def finalize(self):
        if getattr(self, "history", None) is not None:
            self.history.close()  # the updates listener's thread and socket
        if getattr(self, "tracer", None) is not None:
            self.tracer.close()
        # Metrics before their families (signals.TritonSink.close): the unload-time crash of custom metrics.
        if getattr(self, "monitor", None) is not None:
            self.monitor.close()
            self.monitor = None
