"""Triton `retrieval`: session vectors -> top-K raw ids and scores. Logic: sessionrec.serving.retrieval."""

import triton_python_backend_utils as pb_utils

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

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                x = {name: io.input_array(pb_utils, request, name) for name in INPUTS}
                rows = self.retriever.retrieve(
                    x["session_embedding"], x["items"], x["fallback"], x["K"], x["EXCLUDE_SEEN"]
                )
            except (RequestError, ShardUnavailable) as exc:  # a shard server down: UNAVAILABLE, this request
                responses.append(io.error_for(pb_utils, exc))
                continue
            if len(rows) == 1:
                ids, scores = rows[0]
                responses.append(io.response(pb_utils, {"ITEM_IDS": ids[None], "SCORES": scores[None]}, self.dtypes))
            elif len({len(ids) for ids, _ in rows}) > 1:
                # One response carries one rectangular tensor: rows of one request need the same K.
                responses.append(io.error_response(pb_utils, "sessions batched in one request returned different numbers of items"))
            else:
                responses.append(io.response(pb_utils, {
                    "ITEM_IDS": [ids for ids, _ in rows], "SCORES": [s for _, s in rows]}, self.dtypes))
        return responses
