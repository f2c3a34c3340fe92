"""gRPC TLS settings for tritonserver, and a throwaway self-signed CA for tests and `serve --tls-self-signed`.

    bundle = generate_self_signed(tmp_dir)                 # CA + server cert for 127.0.0.1/localhost
    server = TritonServer(repo, grpc_tls=bundle.server_tls(), client_tls=bundle.client_tls())
    client = tritonclient.grpc.InferenceServerClient(server.grpc_url, **bundle.client_tls().grpc_kwargs())

Only gRPC is encrypted: tritonserver's HTTP endpoint (health, metrics) has no TLS option, so keep it on
loopback (`TritonServer(http_address="127.0.0.1")`) when gRPC listens on a public interface.
The CA's private key is never written: a bundle cannot issue more certificates, make a new one.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GrpcTLS:
    """Server side: the tritonserver `--grpc-*` TLS flags."""

    server_cert: Path  # PEM chain the server presents (--grpc-server-cert)
    server_key: Path  # its PEM private key (--grpc-server-key)
    client_ca: Path | None = None  # set: mutual TLS, clients must present a cert signed by this CA

    def flags(self) -> list[str]:
        for path in (self.server_cert, self.server_key, self.client_ca):
            if path is not None and not Path(path).is_file():
                # tritonserver itself would only say "failed to start GRPC service"
                raise FileNotFoundError(f"TLS file not found: {path}")
        flags = [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={self.server_cert}",
            f"--grpc-server-key={self.server_key}",
        ]
        if self.client_ca is not None:
            # --help says the root cert is ignored "unless --grpc-use-ssl is false": in 2.51 it is the
            # CA for client certificates and only matters with --grpc-use-ssl-mutual=true.
            flags += [f"--grpc-root-cert={self.client_ca}", "--grpc-use-ssl-mutual=true"]
        return flags


@dataclass(frozen=True)
class ClientTLS:
    """Client side: what a tritonclient.grpc client needs to reach a TLS server."""

    ca_cert: Path  # verifies the server certificate
    cert: Path | None = None  # client certificate, for mutual TLS
    key: Path | None = None

    def grpc_kwargs(self) -> dict:
        """Keyword arguments for `tritonclient.grpc.InferenceServerClient` (it reads the files)."""
        return {
            "ssl": True,
            "root_certificates": str(self.ca_cert),
            "private_key": None if self.key is None else str(self.key),
            "certificate_chain": None if self.cert is None else str(self.cert),
        }


@dataclass(frozen=True)
class SelfSignedBundle:
    """PEM files written by `generate_self_signed`."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_tls(self, mutual: bool = False) -> GrpcTLS:
        return GrpcTLS(self.server_cert, self.server_key, self.ca_cert if mutual else None)

    def client_tls(self, with_certificate: bool = False) -> ClientTLS:
        if with_certificate:
            return ClientTLS(self.ca_cert, self.client_cert, self.client_key)
        return ClientTLS(self.ca_cert)


def generate_self_signed(
    directory: str | Path,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    days: int = 30,
) -> SelfSignedBundle:
    """Write a one-off CA, a server cert for `hosts` (IPs and DNS names) and a client cert to `directory`.

    Keys are ECDSA P-256 (fast to make, accepted by gRPC); key files are created 0600.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError("generating TLS certificates needs `pip install cryptography`") from exc

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(minutes=5)  # tolerate small clock skew between hosts
    not_after = now + datetime.timedelta(days=days)

    def name(common_name: str) -> x509.Name:
        return x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sessionrec self-signed"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("sessionrec test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(x509, cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common_name: str, usage, alt_names: list) -> tuple:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name)).issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(x509, cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    alt_names = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    server_cert, server_key = leaf(hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, alt_names)
    client_cert, client_key = leaf("sessionrec client", ExtendedKeyUsageOID.CLIENT_AUTH, [])

    pem = serialization.Encoding.PEM
    bundle = SelfSignedBundle(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    bundle.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    bundle.server_cert.write_bytes(server_cert.public_bytes(pem))
    bundle.client_cert.write_bytes(client_cert.public_bytes(pem))
    for path, key in ((bundle.server_key, server_key), (bundle.client_key, client_key)):
        _write_private(path, key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
    return bundle


def _key_usage(x509, cert_sign: bool):
    return x509.KeyUsage(
        digital_signature=not cert_sign, key_cert_sign=cert_sign, crl_sign=cert_sign,
        content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, encipher_only=False, decipher_only=False,
    )


def _write_private(path: Path, data: bytes) -> None:
    if path.exists():
        path.unlink()  # O_CREAT keeps an existing file's looser mode
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
