"""Who we are on a TLS channel (CA + our certificate + our key) and the contexts built from it.

Both directions authenticate: a server context REQUIRES a client certificate signed by the CA,
and a client context presents ours and verifies the server's against the same CA. Names are
not checked by the context (peers are often reached by address); whoever needs to know WHO is
on the other side reads `peer_common_name` and decides (e.g. the OpenFlow listener binds a
switch to the hypervisor its certificate names).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypetunnel.errors import HypeTunnelError
from hypetunnel.pki.reload import track


@dataclass(frozen=True)
class Identity:
    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_directory(cls, directory: Path, name: str) -> Identity:
        """The layout `hypetunnel pki` writes: <dir>/ca.crt, <dir>/<name>.crt, <dir>/<name>.key."""
        d = Path(directory)
        return cls(ca=d / "ca.crt", cert=d / f"{name}.crt", key=d / f"{name}.key")

    def check(self) -> None:
        """Raise a clear error naming the missing file (before any listener starts)."""
        for what, path in (("CA certificate", self.ca), ("certificate", self.cert),
                           ("private key", self.key)):
            if not path.is_file():
                raise HypeTunnelError(f"TLS {what} {path} does not exist "
                                      "(create it with `hypetunnel pki init|issue`)")


@dataclass(frozen=True)
class TlsConfig:
    """The daemon's TLS settings, handed to every channel: None anywhere means plain."""

    directory: Path
    name: str

    @property
    def identity(self) -> Identity:
        return Identity.in_directory(self.directory, self.name)


def _base(purpose: ssl.Purpose, identity: Identity) -> ssl.SSLContext:
    identity.check()
    ctx = ssl.create_default_context(purpose, cafile=str(identity.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(identity.cert), str(identity.key))
    except (ssl.SSLError, OSError) as e:
        raise HypeTunnelError(f"TLS: cannot load {identity.cert} with {identity.key}: {e}") from e
    return track(ctx, identity)  # reloaded on SIGHUP (hypetunnel.pki.reload)


def server_context(identity: Identity) -> ssl.SSLContext:
    """TLS 1.2+ server that refuses any client without a certificate signed by our CA."""
    ctx = _base(ssl.Purpose.CLIENT_AUTH, identity)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(identity: Identity, check_hostname: bool = False) -> ssl.SSLContext:
    """TLS 1.2+ client that presents our certificate and accepts only a server whose
    certificate our CA signed. check_hostname: also match the address/name asked for against
    the server's SAN (certificates carry a DNS SAN for their name, and IP SANs if issued so)."""
    ctx = _base(ssl.Purpose.SERVER_AUTH, identity)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def certificate_serial(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> int | None:
    """The serial number of the verified peer certificate (None without one)."""
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    serial = cert.get("serialNumber") if cert else None
    return int(str(serial), 16) if serial else None


def peer_common_name(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The CN of the verified peer certificate, None without one (plain or unverified)."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    subject: Any = cert.get("subject", ())  # ((("commonName", "hv1"),), ...)
    for rdn in subject:
        for attribute in rdn:
            if attribute[0] == "commonName":
                return str(attribute[1])
    return None
