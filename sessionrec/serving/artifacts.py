"""A published version's artifacts: the manifest, checksum verification, and loaders per model.

Every Triton model verifies its own files against the manifest's sha256 before serving them, so a
corrupted or tampered artifact makes that version fail to load (the previous one keeps serving)
instead of answering wrong. Nothing here unpickles: numpy arrays load with allow_pickle=False.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from sessionrec.errors import SessionrecError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "sessionrec-manifest"


class ArtifactError(SessionrecError):
    """A version folder cannot be served: missing manifest or artifact, or a checksum mismatch."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(version_dir: str | Path) -> dict:
    path = Path(version_dir) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{path}: missing manifest (this folder was not written by `sessionrec export`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: corrupted manifest: {exc}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ArtifactError(f"{path}: not a sessionrec manifest")
    return manifest


def verify_model_artifacts(version_dir: str | Path, model: str) -> dict:
    """Check every artifact of `model` in this version against the manifest; return the manifest."""
    version_dir = Path(version_dir)
    manifest = read_manifest(version_dir)
    root = version_dir.parent.parent  # <repository>/<model>/<version>
    prefix = f"{model}/{version_dir.name}/"
    listed = {k: v for k, v in manifest["artifacts"].items() if k.startswith(prefix)}
    if not listed:
        raise ArtifactError(f"{version_dir / MANIFEST}: lists no artifact for model {model!r} version {version_dir.name}")
    for rel, expected in sorted(listed.items()):
        _check(root / rel, expected)
    return manifest


def _check(path: Path, expected: str) -> None:
    if not path.is_file():
        raise ArtifactError(f"{path}: artifact listed in the manifest is missing")
    actual = sha256_file(path)
    if actual != expected:
        raise ArtifactError(
            f"{path}: checksum mismatch (manifest sha256 {expected[:12]}..., file {actual[:12]}...): "
            "refusing to serve a corrupted or modified artifact"
        )


def verified_array(version_dir: str | Path, model: str, name: str) -> np.ndarray:
    """One array of `model` in this version, checked against the manifest's checksum: for a step that
    reads a sibling model's small file without hashing all of that model's artifacts (a FAISS index)."""
    version_dir = Path(version_dir)
    rel = f"{model}/{version_dir.name}/{name}"
    expected = read_manifest(version_dir)["artifacts"].get(rel)
    if expected is None:
        raise ArtifactError(f"{version_dir / MANIFEST}: lists no artifact {rel!r}")
    _check(version_dir.parent.parent / rel, expected)
    return load_array(version_dir / name)


def load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable array: {exc}") from None


def load_preprocessor(version_dir: str | Path, verify: bool = True):
    from sessionrec.serving.preprocess import IdMap, Preprocessor

    version_dir = Path(version_dir)
    manifest = verify_model_artifacts(version_dir, "preprocess") if verify else read_manifest(version_dir)
    serving = manifest["serving"]
    return Preprocessor(IdMap(load_array(version_dir / "item_ids.npy")), serving["max_len"], serving["max_request_items"],
                        schema=serving.get("schema", "graph"))  # versions exported before schemas: graph


def load_encoder(version_dir: str | Path, verify: bool = True, threads: int = 1, filename: str | None = None):
    from sessionrec.serving.encoder import OnnxEncoder

    version_dir = Path(version_dir)
    manifest = verify_model_artifacts(version_dir, "session_encoder") if verify else read_manifest(version_dir)
    return OnnxEncoder(version_dir / (filename or manifest["serving"]["encoder_file"]), threads=threads)


def load_retriever(version_dir: str | Path, verify: bool = True, shards: str = "remote"):
    """The retrieval step of a version. A sharded version (manifest `retrieval_shards`) searches its
    shards: on the shard servers named by SESSIONREC_SHARD_ADDRESSES (`shards="remote"`, serving),
    or from the shard folders in this repository (`shards="local"`, export's verification)."""
    from sessionrec.export.faiss_index import load_index
    from sessionrec.serving.preprocess import IdMap
    from sessionrec.serving.retrieval import Retriever
    from sessionrec.serving import shards as shards_lib

    version_dir = Path(version_dir)
    manifest = verify_model_artifacts(version_dir, "retrieval") if verify else read_manifest(version_dir)
    if not shards_lib.shard_list(manifest):
        index = load_index(version_dir / "items.faiss")
    elif shards == "local":
        index = shards_lib.LocalShards.load(version_dir.parent.parent, int(version_dir.name), manifest)
    elif shards == "remote":
        index = shards_lib.RemoteShards.from_env(int(version_dir.name), manifest)
    else:
        raise ValueError(f"shards must be 'local' or 'remote', got {shards!r}")
    return Retriever(
        index=index,
        id_map=IdMap(load_array(version_dir / "item_ids.npy")),
        popularity=load_array(version_dir / "popularity.npy"),
        max_k=manifest["serving"]["max_k"],
        max_len=manifest["serving"]["max_len"],
    )
