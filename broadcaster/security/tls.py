"""TLS for the WebSocket port (wss://) and the HTTP publish API (https://).

`[server] tls_cert` (PEM chain) and `tls_key` (PEM key) build one server
context, shared by both ports. TLS 1.2 is the minimum (1.0 and 1.1 are
deprecated by RFC 8996); ciphers are the `ssl` module's secure defaults.

What TLS changes under the writer (docs/ARCHITECTURE.md, "TLS"): the
session hands bytes to asyncio's SSL transport exactly as to a TCP one;
`get_write_buffer_size` counts the bytes not yet encrypted and the
ciphertext waiting for the TCP transport, and `pause_writing` /
`resume_writing` follow the same (0, 0) limits; SO_SNDBUF and SO_LINGER go
to the same socket (`get_extra_info("socket")` reaches through).
"""

from __future__ import annotations

import ssl

from broadcaster.errors import ConfigError

__all__ = ["server_context"]


def server_context(cert: str, key: str, *, source: str = "<config>") -> ssl.SSLContext:
    """An SSL server context from PEM files; a ConfigError names the key that is wrong."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            source,
            "[server] tls_cert / tls_key",
            f"a PEM certificate chain and its private key ({exc})",
        ) from None
    return context
