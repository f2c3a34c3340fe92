"""Triton `retrieval_shard_<s>`: one shard's top K over its rows. Logic: sessionrec.serving.shards.

Served alone by shard s's tritonserver; the front's retrieval fans each batch of session vectors
out to every shard and merges the answers by score (docs/LARGE_CATALOGUES.md, "Sharded retrieval").
"""

import triton_python_backend_utils as pb_utils

from sessionrec.serving import triton_io as io


class TritonPythonModel:
    def initialize(self, args):
        from sessionrec.serving.shards import ShardIndex

        # FAISS is imported and the index read at the lowest CPU priority: a switch leaves the cores to serving.
        self.shard = io.load_at_low_priority(lambda: ShardIndex.load(io.version_dir(args)))
        self.dtypes = io.output_dtypes(args, pb_utils)

    def execute(self, requests):
        responses = []
        for request in requests:  # one request is one front batch: one search each
            try:
                scores, ids = self.shard.answer(io.input_array(pb_utils, request, "session_embedding"),
                                                io.input_array(pb_utils, request, "K"))
            except ValueError as exc:
                responses.append(io.error_response(pb_utils, str(exc)))
                continue
            responses.append(io.response(pb_utils, {"SCORES": scores, "MODEL_IDS": ids}, self.dtypes))
        return responses
