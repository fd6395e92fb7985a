"""The TLS server: one Cluster on https://127.0.0.1:<ephemeral port> with a fresh CA, keep-alive connections,
and every request recorded with the caller's identity."""
from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import tempfile
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from netpol_scan.sandbox.kube_api.cluster import Cluster
from netpol_scan.sandbox.kube_api.errors import ApiError
from netpol_scan.sandbox.kube_api.routes import answer
from netpol_scan.sandbox.kube_api.token import EksTokenVerifier


@dataclass(frozen=True)
class TlsMaterial:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def generate_tls() -> TlsMaterial:
    """A fresh EC P-256 CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kubernetes-{uuid.uuid4().hex[:8]}")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return TlsMaterial(ca.public_bytes(pem), cert.public_bytes(pem), key_pem)


def _server_context(tls: TlsMaterial) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # load_cert_chain only reads files; they are deleted once loaded.
    with tempfile.TemporaryDirectory() as directory:
        cert_file, key_file = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
        with open(cert_file, "wb") as out:
            out.write(tls.cert_pem)
        with open(key_file, "wb") as out:
            out.write(tls.key_pem)
        context.load_cert_chain(cert_file, key_file)
    return context


class _TlsHttpServer(ThreadingHTTPServer):
    """Handshakes in each connection's thread (a stalled client cannot block accept) and can drop live
    connections on stop, so that clients with pooled keep-alive connections see the server go away."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext):
        super().__init__(("127.0.0.1", 0), handler)
        self.context = context
        self.connections: set[ssl.SSLSocket] = set()
        self.connections_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK add 40 ms per answer.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request.settimeout(_Handler.timeout)  # a client that never completes the handshake frees its thread
        with self.context.wrap_socket(request, server_side=True) as connection:
            with self.connections_lock:
                self.connections.add(connection)
            try:
                self.RequestHandlerClass(connection, client_address, self)
            finally:
                with self.connections_lock:
                    self.connections.discard(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # handshake failures and clients that hang up (read-timeout tests) are expected here

    def drop_connections(self) -> None:
        with self.connections_lock:
            for connection in list(self.connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class KubeApiServer:
    """Serves one Cluster on https://127.0.0.1:<ephemeral port> with a fresh CA."""

    def __init__(self, cluster: Cluster, verifier: EksTokenVerifier, poll_interval: float = 0.05):
        self.cluster = cluster
        self.verifier = verifier
        tls = generate_tls()
        self.ca_pem = tls.ca_pem
        handler = type("BoundHandler", (_Handler,), {"api": self})
        self._httpd = _TlsHttpServer(handler, _server_context(tls))
        # A short poll interval keeps stop() quick: it waits for serve_forever's next poll. Hundreds of servers
        # (a fleet benchmark) want a long one: each poll is a wake-up that costs CPU.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(poll_interval,),
                                        name=f"kube-api-{cluster.name}", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def ca_data(self) -> str:
        """Base64 of the CA PEM, as EKS DescribeCluster returns it in certificateAuthority.data."""
        return base64.b64encode(self.ca_pem).decode()

    def start(self) -> KubeApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.drop_connections()

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    api: KubeApiServer
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    timeout = 60  # idle keep-alive connections end, so their threads do too

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # also keeps the connection in step
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        cluster = self.api.cluster
        identity = self.api.verifier.identity(self.headers.get("Authorization"), cluster.name)
        entry = {"method": method, "path": parts.path, "query": query, "identity": identity,
                 "accept": self.headers.get("Accept", ""), "status": None}
        cluster.record(entry)
        try:
            code, body = answer(cluster, method, parts.path, query, identity, self.headers.get("Accept"),
                                payload)
            headers: dict[str, str] = {}
        except ApiError as error:
            code, body, headers = error.code, error.status(), error.headers
        entry["status"] = code
        self._send(code, body, headers)

    def _send(self, code: int, body: Any, headers: dict[str, str]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout):
            self.close_connection = True  # the client gave up (e.g. its read timeout fired during a delay)
