"""Certificate rotation without a restart: every TLS context built from an `Identity` is
remembered (weakly), and `reload_all` loads the identity's files into each of them again.

A context that loads a new certificate and key serves them on every LATER handshake; the
connections already up keep the session they made (TLS does not re-authenticate). The daemon
calls `reload_all` on SIGHUP (`systemctl reload`; the Ansible rotate_certificates role).
The new files are checked first in a throwaway context: a certificate that does not match its
key (a rotation caught half-way) changes nothing, and the error says why.
"""

from __future__ import annotations

import ssl
import threading
import weakref
from typing import TYPE_CHECKING

from hypetunnel.errors import HypeTunnelError

if TYPE_CHECKING:
    from hypetunnel.pki.identity import Identity

_lock = threading.Lock()
_live: weakref.WeakKeyDictionary[ssl.SSLContext, Identity] = weakref.WeakKeyDictionary()


def track(context: ssl.SSLContext, identity: Identity) -> ssl.SSLContext:
    """Remember `context` as built from `identity` (for `reload_all`); returns it."""
    with _lock:
        _live[context] = identity
    return context


def _checked(identity: Identity) -> None:
    identity.check()
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=str(identity.ca))
        probe.load_cert_chain(str(identity.cert), str(identity.key))
    except (ssl.SSLError, OSError) as e:
        raise HypeTunnelError(f"TLS reload: {identity.cert} with {identity.key} and CA "
                              f"{identity.ca}: {e}; the current certificates stay") from e


def reload_all(identity: Identity | None = None) -> int:
    """Load every tracked context's identity files into it again (certificate, key, and the
    CA file's certificates, which are added: a CA trusted before stays trusted until the
    process restarts); only the contexts built from `identity` if given. Returns how many
    contexts were reloaded."""
    with _lock:
        pairs = [(c, i) for c, i in _live.items() if identity is None or i == identity]
    for checked in {i for _, i in pairs}:
        _checked(checked)  # all of them before any context is touched
    for context, ident in pairs:
        context.load_cert_chain(str(ident.cert), str(ident.key))
        context.load_verify_locations(cafile=str(ident.ca))
    return len(pairs)
