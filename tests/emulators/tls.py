"""Test-only TLS for the loopback emulators: a self-signed certificate and a TLS listener.

``make_certificate(directory)`` runs ``openssl req -x509`` (an argument list, no
shell) for a certificate valid for 127.0.0.1 and localhost; its PEM file is also
the CA bundle a client trusts. ``server_context`` loads it for a server;
``wrap_listener`` makes a ``socketserver`` server speak TLS on its listening
socket. The handshake happens in each connection's handler thread (on its first
read), so a client that refuses the certificate never blocks the accept loop.
``QuietTlsErrors`` keeps such refusals out of stderr.
"""
import os
import shutil
import socketserver
import ssl
import subprocess
import sys
from typing import Any, NamedTuple


class Certificate(NamedTuple):
    cert: str  # PEM certificate: the server's, and the CA bundle clients trust
    key: str  # PEM private key (unencrypted)


def make_certificate(directory: str, days: int = 2) -> Certificate:
    """A fresh self-signed EC certificate for 127.0.0.1 / localhost in ``directory``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is needed to make the test certificate")
    cert, key = os.path.join(directory, "emulator-cert.pem"), os.path.join(directory, "emulator-key.pem")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", str(days), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    return Certificate(cert, key)


def server_context(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.cert, certificate.key)
    return context


def wrap_listener(server: socketserver.TCPServer, context: ssl.SSLContext) -> None:
    """Serve TLS on ``server`` (before ``serve_forever``)."""
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)


class QuietTlsErrors:
    """Server mixin: a refused handshake or a dropped TLS connection is not a server error."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError)):
            return
        super().handle_error(request, client_address)  # type: ignore[misc]
