"""OVSDB over `ssl:`: the controller's certificate for every hypervisor's ovsdb-server.

The ovs library's SSL stream takes its key, certificate and CA from process-wide settings
(one controller, one identity), verifies the server against the CA and offers TLS 1.2+. An
endpoint "ssl:IP:6640" then authenticates both ways: ovsdb-server, started with the same CA,
refuses a client without a certificate it signed.

The library checks no name: any hypervisor's certificate would do for any address. So the IDL
worker also checks that the server presents the certificate of the hypervisor it was enlisted
as (CN = its name, as `hypetunnel pki issue` makes it) before it trusts a byte of its state:
an enlistment with another host's address, or one host posing as another, is refused.
"""

from __future__ import annotations

import ssl
from typing import Any

import ovs.stream

from hypetunnel.pki import Identity


def use_identity(identity: Identity) -> None:
    """Every later `ssl:` OVSDB connection of this process presents `identity`."""
    identity.check()
    ovs.stream.Stream.ssl_set_private_key_file(str(identity.key))
    ovs.stream.Stream.ssl_set_certificate_file(str(identity.cert))
    ovs.stream.Stream.ssl_set_ca_cert_file(str(identity.ca))


def peer_mismatch(session: Any, expected: str) -> str | None:
    """Why the server of this connected `ovs.jsonrpc.Session` is not hypervisor `expected`,
    or None when it is (or when the stream is plain tcp/unix: nothing to check)."""
    stream = getattr(getattr(session, "rpc", None), "stream", None)
    sock = getattr(stream, "socket", None)
    if not isinstance(sock, ssl.SSLSocket):
        return None
    cert = sock.getpeercert()
    if not cert:
        return "presented no certificate"
    subject: Any = cert.get("subject", ())  # ((("commonName", "hv1"),), ...)
    names = [value for rdn in subject for key, value in rdn if key == "commonName"]
    if names != [expected]:
        shown = ", ".join(repr(n) for n in names) or "no common name"
        return f"presents the certificate of {shown}, not of {expected!r}"
    return None
