"""The embedded server's retrieval shard servers: one tritonserver per shard, on 127.0.0.1.

`sessionrec serve` on a sharded export (`export --shards S`) runs on one machine what the chart runs
as S Deployments (docs/LARGE_CATALOGUES.md, "Sharded retrieval"): shard s's tritonserver loads only
`retrieval_shard_<s>` (the newest two versions on disk, like every step), and the front's retrieval
reaches it at the s-th address of SESSIONREC_SHARD_ADDRESSES (sessionrec.serving.shards).

The front's python stubs read those addresses when they start, so they are fixed for the front's
lifetime: a shard server that died is restarted on its own gRPC port, and every version the front
serves has the same shard count (`served_shard_count`).
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sessionrec.errors import SessionrecError
from sessionrec.serving.launcher import LOOPBACK, TritonServer
from sessionrec.serving.shards import ADDRESSES_ENV, shard_list, shard_model


def served_shard_count(manifests: dict[int, dict]) -> int:
    """The shard count of the versions one front serves ({version: manifest}): 0 when none is
    sharded. Unsharded versions mix with sharded ones (they search their own index); two different
    counts do not, since the front has one list of shard addresses."""
    counts = {v: len(shard_list(m)) for v, m in manifests.items()}
    sharded = {c for c in counts.values() if c}
    if len(sharded) > 1:
        listed = ", ".join(f"version {v}: {c or 'unsharded'}" for v, c in sorted(counts.items()))
        raise SessionrecError(f"the served versions are split into different retrieval shard counts ({listed}); "
                              "one server runs one set of shard servers: serve versions with the same "
                              "`export --shards`, or roll back / prune the other ones")
    return sharded.pop() if sharded else 0


class ShardServers:
    """tritonservers for retrieval_shard_0..S-1 of `repository`, loopback only, free ports."""

    def __init__(self, repository: str | Path, count: int, log_file: str | Path | None = None,
                 venv_python: str | Path = sys.executable, exit_timeout_s: int = 10):
        self.repository = Path(repository)
        self.log_file = Path(log_file) if log_file else None
        self.venv_python = venv_python
        self.exit_timeout_s = exit_timeout_s
        self.servers = [self._server(s, grpc_port=0) for s in range(count)]

    def _server(self, shard: int, grpc_port: int) -> TritonServer:
        # Beside the front's log when it has one (front.log -> front.shard0.log), else a temp file.
        log = self.log_file.with_name(f"{self.log_file.stem}.shard{shard}{self.log_file.suffix}") if self.log_file else None
        return TritonServer(self.repository, models=[shard_model(shard)], grpc_port=grpc_port, address=LOOPBACK,
                            log_file=log, venv_python=self.venv_python, exit_timeout_s=self.exit_timeout_s)

    def __len__(self) -> int:
        return len(self.servers)

    def start(self, timeout: float = 120.0) -> ShardServers:
        """All shard servers, started side by side (most of a start is waiting); all or none."""
        with ThreadPoolExecutor(max_workers=max(len(self.servers), 1)) as pool:
            outcomes = list(pool.map(lambda server: _try(server.start, timeout=timeout, require_models=True),
                                     self.servers))
        failed = [exc for exc in outcomes if isinstance(exc, BaseException)]
        if failed:
            self.stop()
            raise failed[0]
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    @property
    def addresses(self) -> list[str]:
        return [server.grpc_url for server in self.servers]

    def environment(self) -> dict[str, str]:
        """What the front needs to reach them (its environment at start)."""
        return {ADDRESSES_ENV: ",".join(self.addresses)}

    def load(self) -> None:
        """Every shard server (re)loads its shard model: a new version on disk loads beside the
        serving one, a retired one is dropped. Raises on the first load that fails."""
        for shard, server in enumerate(self.servers):
            server.load_model(shard_model(shard))

    def missing(self, version: int) -> list[str]:
        """The shard models that do not have `version` ready on their server ([] when all do)."""
        missing = []
        for shard, server in enumerate(self.servers):
            try:
                ready = server.model_ready(shard_model(shard), str(version))
            except Exception:  # noqa: BLE001 - a server that does not answer has nothing ready
                ready = False
            if not ready:
                missing.append(f"{shard_model(shard)} version {version} at {server.grpc_url}")
        return missing

    def dead(self) -> list[int]:
        """The shards whose tritonserver has exited (killed, crashed): a process check, no request."""
        return [shard for shard, server in enumerate(self.servers) if not server.is_running]

    def restart(self, shard: int, timeout: float = 120.0) -> TritonServer:
        """Shard `shard`'s server again, on the gRPC port the front already dials."""
        old = self.servers[shard]
        old.stop(grace_s=0)  # reaps what is left of its process group and shared memory
        server = self._server(shard, grpc_port=old.ports["grpc"])
        server.start(timeout=timeout, require_models=True)
        self.servers[shard] = server
        return server

    def reload_model(self, model: str) -> None:
        """Unload + load `model` on its shard server: a new python stub for one that died."""
        server = self.servers[int(model.rsplit("_", 1)[1])]
        server.client().unload_model(model)
        server.load_model(model)


def _try(call, **kwargs):
    try:
        return call(**kwargs)
    except BaseException as exc:  # noqa: BLE001 - returned, so the other starts finish and can be stopped
        return exc
