"""Startup warnings for settings that are fine on 127.0.0.1 and unsafe on a public address.

The defaults keep `broadcaster serve` a one-command demo on loopback. A
server bound to any other address is reachable by strangers; these are the
settings an operator most likely forgot. Warnings, not errors: a private
network or a proxy in front may make them right.
"""

from __future__ import annotations

import ipaddress

from broadcaster.config import Config
from broadcaster.core.policy import Access

__all__ = ["exposure_warnings"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warnings(config: Config) -> list[str]:
    """What is unsafe about `config` on a non-loopback address (empty on loopback)."""
    server = config.server
    if _loopback(server.host):
        return []
    found: list[str] = []
    if not server.tls_cert:
        found.append(
            "no TLS ([server] tls_cert/tls_key): tokens and data cross the network in clear "
            "text unless a TLS-terminating proxy is in front"
        )
    if "*" in server.allowed_origins:
        found.append('[server] allowed_origins has "*": any web page may connect its visitors')
    defaults = config.policies.defaults
    if defaults.publish is Access.ANYONE and config.limits.publish_rate == 0:
        found.append(
            '[defaults] publish = "anyone" without [limits] publish_rate: any client may '
            "publish to every channel as fast as it can"
        )
    if config.admin.open and not config.admin.token and not config.auth.enabled:
        found.append("[admin] open = true: /stats, /metrics and $sys.* are served to everyone")
    return found
