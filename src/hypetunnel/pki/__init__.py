"""HypeTunnel's own small PKI: one CA, one certificate per hypervisor and per controller.

The certificate's common name IS the identity: a switch presenting CN=hv1 is hypervisor hv1,
a controller presenting CN=ctl1 is controller ctl1. Every control channel (OpenFlow, OVSDB,
API, etcd, the HA peer channel) builds its TLS contexts from an `Identity` here.
"""

from hypetunnel.pki.authority import (
    CertificateInfo,
    PkiError,
    check_name,
    init_ca,
    issue,
    list_certificates,
)
from hypetunnel.pki.identity import (
    Identity,
    TlsConfig,
    certificate_serial,
    client_context,
    peer_common_name,
    server_context,
)
from hypetunnel.pki.reload import reload_all, track

__all__ = [
    "CertificateInfo",
    "Identity",
    "PkiError",
    "TlsConfig",
    "certificate_serial",
    "check_name",
    "client_context",
    "init_ca",
    "issue",
    "list_certificates",
    "peer_common_name",
    "reload_all",
    "server_context",
    "track",
]
