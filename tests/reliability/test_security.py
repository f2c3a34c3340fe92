"""Security: gRPC over TLS end to end, loopback-only listeners, checksummed artifacts, no unpickling.

The chart's pod security (non-root, read-only root filesystem, no privilege escalation, all
capabilities dropped) is checked on every rendered scenario by tests/helm/test_policies.py.

    .venv/bin/pytest tests/reliability/test_security.py -q         # ~40 s
"""

from __future__ import annotations

import ast
import ipaddress
import shutil
from pathlib import Path

import numpy as np
import pytest

from sessionrec.clients import NO_RETRY, RecommendClient, RecommendError, ServerUnavailable
from sessionrec.export.repository import current_version
from sessionrec.reliability.procs import listening
from sessionrec.reliability.requests import RawChannel, RawRequest
from sessionrec.serving.artifacts import (ArtifactError, load_encoder, load_preprocessor, load_retriever,
                                          read_manifest)
from sessionrec.serving.embedded import EmbeddedServer
from sessionrec.serving.pipeline import LocalPipeline
from sessionrec.serving.tls import generate_self_signed

ROOT = Path(__file__).resolve().parents[2]
# Shipped code: the package, its mapped folders, the Triton model files, benchmarks and scripts.
# tests/ is left out: tests load only files they just wrote themselves.
SOURCE_DIRS = ["sessionrec", "export", "clients", "load_tests", "model_repository", "benchmarks", "scripts"]


@pytest.fixture(scope="module")
def session(exported_repository):
    version = current_version(exported_repository)
    known = np.load(exported_repository / "preprocess" / str(version) / "item_ids.npy", allow_pickle=False)[1:]
    return known[:4].tolist()


@pytest.mark.server
def test_grpc_tls_end_to_end_with_a_verified_server_certificate(exported_repository, session, tmp_path):
    bundle = generate_self_signed(tmp_path / "tls")
    stranger = generate_self_signed(tmp_path / "other-ca")  # a CA that did not sign the server certificate
    expected = LocalPipeline(exported_repository, current_version(exported_repository)).recommend(session, 10)
    with EmbeddedServer(exported_repository, watch_seconds=0, grpc_tls=bundle.server_tls(),
                        client_tls=bundle.client_tls(), log_file=tmp_path / "triton.log") as server:
        with RecommendClient(server.grpc_url, tls=bundle.client_tls(), retry=NO_RETRY) as client:
            answer = client.recommend(session, k=10)
        assert answer.item_ids == expected.item_ids.tolist()
        np.testing.assert_allclose(answer.scores, expected.scores, atol=1e-4)
        # The raw protobuf path over TLS too (what the malformed-request test uses in plaintext).
        with RawChannel(server.grpc_url, root_certificates=bundle.ca_cert.read_bytes()) as channel:
            assert channel.send(RawRequest.recommend([session], 10)).ok
        # Refused: plaintext to the TLS port, and TLS that trusts another CA (certificate not verified).
        with RecommendClient(server.grpc_url, retry=NO_RETRY, timeout=3) as plaintext:
            with pytest.raises(RecommendError):
                plaintext.recommend(session, k=10)
        with RecommendClient(server.grpc_url, tls=stranger.client_tls(), retry=NO_RETRY, timeout=3) as wrong_ca:
            with pytest.raises(ServerUnavailable):
                wrong_ca.recommend(session, k=10)


@pytest.mark.server
def test_mutual_tls_refuses_a_client_without_a_certificate(exported_repository, session, tmp_path):
    bundle = generate_self_signed(tmp_path / "tls")
    with EmbeddedServer(exported_repository, watch_seconds=0, grpc_tls=bundle.server_tls(mutual=True),
                        client_tls=bundle.client_tls(with_certificate=True), log_file=tmp_path / "triton.log") as server:
        with RecommendClient(server.grpc_url, tls=bundle.client_tls(with_certificate=True), retry=NO_RETRY) as client:
            assert len(client.recommend(session, k=5)) == 5
        with RecommendClient(server.grpc_url, tls=bundle.client_tls(), retry=NO_RETRY, timeout=3) as anonymous:
            with pytest.raises(ServerUnavailable):
                anonymous.recommend(session, k=5)


@pytest.mark.server
def test_nothing_listens_beyond_loopback_by_default(embedded_server):
    sockets = listening(embedded_server.server.pid)  # tritonserver and its stubs, from /proc/net/tcp{,6}
    ports = {int(embedded_server.server.ports[name]) for name in ("grpc", "http", "metrics")}
    assert {port for _, port in sockets} == ports, sockets  # exactly the three endpoints, no stub listens
    assert all(ipaddress.ip_address(address).is_loopback for address, _ in sockets), sockets


@pytest.mark.parametrize("model, loader", [("preprocess", load_preprocessor), ("session_encoder", load_encoder),
                                          ("retrieval", load_retriever)])
def test_every_artifact_is_verified_against_the_manifest_before_it_is_served(exported_repository, tmp_path, model,
                                                                             loader):
    """Each file the manifest lists for a step, one flipped byte at a time: the step refuses to load.

    Not covered by design: model.py runs before it verifies the rest (a changed model.py could skip
    the check), and the manifest is not signed (whoever can rewrite artifacts can rewrite their
    checksums). Both need the repository to be writable only by the exporter (docs/RELIABILITY.md).
    """
    version = str(current_version(exported_repository))
    listed = [rel for rel in read_manifest(exported_repository / "recommend" / version)["artifacts"]
              if rel.startswith(f"{model}/{version}/") and not rel.endswith(("manifest.json", "model.py"))]
    assert listed, f"the manifest lists no artifact of {model}"
    for rel in listed:
        repo = tmp_path / rel.replace("/", "_") / "repository"
        shutil.copytree(exported_repository, repo)
        path = repo / rel
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(ArtifactError, match="checksum mismatch"):
            loader(repo / model / version)


UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def unsafe_calls(path: Path, root: Path = ROOT) -> list[str]:
    """Calls that can unpickle (or otherwise run code from) a file, found in the syntax tree."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def keyword(call: ast.Call, name: str):
        for kw in call.keywords:
            if kw.arg == name:
                return kw.value.value if isinstance(kw.value, ast.Constant) else "not a constant"
        return None

    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and node.module in UNSAFE_MODULES:
            if any(a.name in ("load", "loads", "Unpickler", "open") for a in node.names):
                found.append(f"{where}: from {node.module} import {', '.join(a.name for a in node.names)}")
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        attr = node.func.attr
        if owner in UNSAFE_MODULES and attr in ("load", "loads", "Unpickler", "open"):
            found.append(f"{where}: {owner}.{attr}(...)")
        elif owner in ("np", "numpy") and attr == "load" and keyword(node, "allow_pickle") is not False:
            found.append(f"{where}: {owner}.load(...) without allow_pickle=False")
        elif owner == "torch" and attr == "load" and keyword(node, "weights_only") is not True:
            found.append(f"{where}: torch.load(...) without weights_only=True")
        elif owner == "yaml" and (attr == "unsafe_load" or (attr == "load" and "Safe" not in ast.unparse(node))):
            found.append(f"{where}: yaml.{attr}(...) without a SafeLoader")
        elif owner in ("pd", "pandas") and attr == "read_pickle":
            found.append(f"{where}: {owner}.read_pickle(...)")
    return found


def test_no_code_path_unpickles_untrusted_files():
    files = [p for d in SOURCE_DIRS if (ROOT / d).is_dir() for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 30  # the scan really covers the tree
    found = [hit for path in files for hit in unsafe_calls(path)]
    assert not found, "\n".join(found)


def test_the_unpickling_scan_catches_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle, numpy as np, torch, yaml\nfrom dill import loads\n"
                   "pickle.load(f)\nnp.load(p)\nnp.load(p, allow_pickle=True)\ntorch.load(p)\n"
                   "torch.load(p, weights_only=False)\nyaml.load(s)\n"
                   "np.load(p, allow_pickle=False)\ntorch.load(p, weights_only=True)\nyaml.load(s, Loader=yaml.SafeLoader)\n")
    assert len(unsafe_calls(bad, root=tmp_path)) == 7
