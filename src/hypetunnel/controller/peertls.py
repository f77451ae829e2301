"""Who may be on the HA peer channel: mutual TLS with controller certificates, by name.

Both controllers of a pair present their own certificate (CN = the node name) on the peer port
and verify the other's against the CA. A valid certificate is not enough: hypervisors hold
certificates from the same CA, so the active serves heartbeats (and hand-over requests) only to
a peer whose certificate names one of the pair's controllers, and a standby listens only to the
controller the leader record names.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from hypetunnel.pki import Identity, client_context, peer_common_name, server_context


@dataclass(frozen=True)
class PeerTls:
    server: ssl.SSLContext  # the active's side: requires a client certificate from the CA
    client: ssl.SSLContext  # the standby's side: presents ours, verifies the active's
    controllers: frozenset[str]  # certificate names (CN) allowed on the channel

    @classmethod
    def from_identity(cls, identity: Identity, controllers: Iterable[str]) -> PeerTls:
        names = frozenset(controllers)
        if not names:
            raise ValueError("--peer-name: the peer channel over TLS needs the names of the "
                             "pair's controllers (their certificates' CN)")
        return cls(server_context(identity), client_context(identity), names)

    def refusal(self, ssl_object: ssl.SSLObject | None, expected: str | None = None) -> str | None:
        """Why the verified peer on this connection is not acceptable (None: it is): it must
        be one of the pair's controllers and, if `expected` is given, that very one."""
        name = peer_common_name(ssl_object)
        if name is None:
            return "no verified certificate"
        if name not in self.controllers:
            return f"certificate CN={name!r} is not a controller of this pair " \
                   f"({', '.join(sorted(self.controllers))})"
        if expected is not None and name != expected:
            return f"certificate CN={name!r}, but the leader record names {expected!r}"
        return None
