"""Sharded retrieval served: shard servers answer top-k over their rows, the front merges by score.

A sharded version (`sessionrec export --shards S`) has, besides the usual step folders,
`retrieval_shard_<s>/<N>/` for s in 0..S-1: that range's `items.faiss` and the manifest, whose
`retrieval_shards` list gives every shard's rows [start, stop), index kind and recall. Its
`retrieval/<N>/` keeps the raw ids, popularity and one-click table but no `items.faiss`: the front
node never holds the item vectors (docs/LARGE_CATALOGUES.md, "Sharded retrieval").

- `ShardIndex`: one shard, as a shard server's `retrieval_shard_<s>` python model serves it
  (checksums verified; answers global model ids, so the front needs no offsets).
- `LocalShards`: every shard of a version in this process. Export verifies a sharded version
  through it (served-path check, canaries) before publishing: the same files and the same merge.
- `RemoteShards`: the front's fan-out. Each search goes to every shard server over gRPC in
  parallel, pinned to the front's version N (no request mixes two versions' numbering), with a
  deadline; the answers are merged by score (`export.shards.merge_topk`). A shard that does not
  answer fails the search with `ShardUnavailable` naming it: no partial answer, because a missing
  range silently changes every recommendation and the output contract has no field to say so.

The front reaches shard s at the s-th address of SESSIONREC_SHARD_ADDRESSES (host:port of its
gRPC listener, comma-separated); SESSIONREC_SHARD_TIMEOUT_MS bounds one fan-out (default 1000).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sessionrec.errors import SessionrecError

SHARD_MODEL = "retrieval_shard_{}"
ADDRESSES_ENV = "SESSIONREC_SHARD_ADDRESSES"
TIMEOUT_ENV = "SESSIONREC_SHARD_TIMEOUT_MS"
DEFAULT_TIMEOUT_MS = 1000.0
INPUT, K_INPUT = "session_embedding", "K"  # the shard model's tensors (export.configs.shard_config)
OUTPUT_SCORES, OUTPUT_IDS = "SCORES", "MODEL_IDS"


class ShardConfigError(SessionrecError):
    """A sharded version cannot be served as configured (addresses missing or of the wrong count)."""


class ShardUnavailable(SessionrecError):
    """A shard server did not answer a search; the message names the shard and its address."""


def shard_model(shard: int) -> str:
    return SHARD_MODEL.format(shard)


def shard_list(manifest: dict) -> list[dict]:
    """The manifest's shards ([] for an unsharded version)."""
    return list(manifest.get("retrieval_shards") or [])


@dataclass
class ShardIndex:
    """One shard's FAISS index over rows [start, stop) of the item table."""

    index: object
    start: int  # model id of the shard's first row is start + 1
    stop: int

    @classmethod
    def load(cls, version_dir: str | Path, verify: bool = True) -> ShardIndex:
        from sessionrec.export.faiss_index import load_index
        from sessionrec.serving.artifacts import ArtifactError, read_manifest, verify_model_artifacts

        version_dir = Path(version_dir)
        model = version_dir.parent.name
        manifest = verify_model_artifacts(version_dir, model) if verify else read_manifest(version_dir)
        mine = [s for s in shard_list(manifest) if s["model"] == model]
        if not mine:
            raise ArtifactError(f"{version_dir}: the manifest lists no retrieval shard named {model!r}")
        start, stop = mine[0]["rows"]
        index = load_index(version_dir / "items.faiss")
        if index.ntotal != stop - start:
            raise ArtifactError(f"{version_dir / 'items.faiss'}: holds {index.ntotal} items, the manifest says rows "
                                f"[{start}, {stop}) ({stop - start} items)")
        return cls(index, int(start), int(stop))

    @property
    def d(self) -> int:
        return self.index.d

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (B, k'), global model ids (B, k')), k' = min(k, shard size); padding id 0 / -inf."""
        from sessionrec.export.faiss_index import search

        scores, ids = search(self.index, queries, int(min(k, self.stop - self.start)))
        return scores, np.where(ids > 0, ids + self.start, 0)


    def answer(self, queries: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The shard model's request: (B, d) vectors and (B, 1) K (the front sends one K per batch)."""
        k = np.asarray(k).reshape(-1)
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.d:
            raise ValueError(f"session_embedding must be (B, {self.d}), got {queries.shape}")
        if k.size != queries.shape[0] or k.size == 0 or np.unique(k).size != 1 or int(k[0]) < 1:
            raise ValueError(f"K must be one positive depth per session vector, the same for the batch; got {k.tolist()}")
        return self.search(queries, int(k[0]))


class LocalShards:
    """Every shard of a version searched in this process and merged: export's check of a sharded version."""

    def __init__(self, shards: list[ShardIndex]):
        self.shards = shards
        self.d = shards[0].d

    @classmethod
    def load(cls, repository: Path, version: int, manifest: dict) -> LocalShards:
        return cls([ShardIndex.load(Path(repository) / s["model"] / str(version)) for s in shard_list(manifest)])

    def search_topk(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from sessionrec.export.shards import merge_topk  # FAISS: kept out of the light model.py imports

        return merge_topk([shard.search(queries, k) for shard in self.shards], k)


def addresses_from_env(count: int, environ=os.environ) -> list[str]:
    value = environ.get(ADDRESSES_ENV, "").strip()
    addresses = [a.strip() for a in value.split(",") if a.strip()]
    if len(addresses) != count:
        raise ShardConfigError(
            f"this version's retrieval is split into {count} shards: set {ADDRESSES_ENV} to their {count} gRPC "
            f"addresses (host:port, comma-separated, shard 0 first); got {value!r}")
    return addresses


def timeout_from_env(environ=os.environ) -> float:
    value = environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_MS))
    try:
        timeout = float(value)
    except ValueError:
        raise ShardConfigError(f"{TIMEOUT_ENV}={value!r}: expected milliseconds (a number > 0)") from None
    if timeout <= 0:
        raise ShardConfigError(f"{TIMEOUT_ENV}={value!r}: expected milliseconds (a number > 0)")
    return timeout


# Reconnect quickly after a shard server comes back: gRPC's default backoff grows to 120 s, which
# kept the front failing for minutes after the shard was ready again.
_CHANNEL_ARGS = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                 ("grpc.max_reconnect_backoff_ms", 1000)]


class RemoteShards:
    """The front's fan-out to the shard servers (module docstring)."""

    def __init__(self, addresses: list[str], version: int, dim: int, timeout_ms: float = DEFAULT_TIMEOUT_MS):
        import tritonclient.grpc as grpcclient

        self.addresses = list(addresses)
        self.version = str(version)
        self.d = int(dim)
        self.timeout_s = timeout_ms / 1000.0
        self._grpc = grpcclient
        self._clients = [grpcclient.InferenceServerClient(a, channel_args=_CHANNEL_ARGS) for a in self.addresses]
        self._pool = ThreadPoolExecutor(max_workers=len(self.addresses), thread_name_prefix="shard")

    @classmethod
    def from_env(cls, version: int, manifest: dict, environ=os.environ) -> RemoteShards:
        count = len(shard_list(manifest))
        return cls(addresses_from_env(count, environ), version, manifest["serving"]["dim"], timeout_from_env(environ))

    def _search_one(self, shard: int, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        grpc = self._grpc
        vectors = grpc.InferInput(INPUT, list(queries.shape), "FP32")
        vectors.set_data_from_numpy(queries)
        depth = grpc.InferInput(K_INPUT, [queries.shape[0], 1], "INT32")
        depth.set_data_from_numpy(np.full((queries.shape[0], 1), k, dtype=np.int32))
        outputs = [grpc.InferRequestedOutput(OUTPUT_SCORES), grpc.InferRequestedOutput(OUTPUT_IDS)]
        try:
            result = self._clients[shard].infer(shard_model(shard), [vectors, depth], model_version=self.version,
                                                outputs=outputs, client_timeout=self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - tritonclient raises its own error for every gRPC failure
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ShardUnavailable(
                f"retrieval shard {shard} ({shard_model(shard)} version {self.version} at {self.addresses[shard]}) "
                f"did not answer: {reason[:300]}") from None
        return result.as_numpy(OUTPUT_SCORES), result.as_numpy(OUTPUT_IDS)

    def search_topk(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        futures = [self._pool.submit(self._search_one, s, queries, k) for s in range(len(self.addresses))]
        parts, failed = [], []
        for future in futures:  # every future is waited for: none outlives the request that sent it
            try:
                parts.append(future.result())
            except ShardUnavailable as exc:
                failed.append(str(exc))
        if failed:
            raise ShardUnavailable("; ".join(failed))
        from sessionrec.export.shards import merge_topk  # FAISS: kept out of the light model.py imports

        return merge_topk(parts, k)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for client in self._clients:
            client.close()
