"""OVSDB over `ssl:`: the controller's certificate for every hypervisor's ovsdb-server.

The ovs library's SSL stream takes its key, certificate and CA from process-wide settings
(one controller, one identity), verifies the server against the CA and offers TLS 1.2+. An
endpoint "ssl:IP:6640" then authenticates both ways: ovsdb-server, started with the same CA,
refuses a client without a certificate it signed.
"""

from __future__ import annotations

import ovs.stream

from hypetunnel.pki import Identity


def use_identity(identity: Identity) -> None:
    """Every later `ssl:` OVSDB connection of this process presents `identity`."""
    identity.check()
    ovs.stream.Stream.ssl_set_private_key_file(str(identity.key))
    ovs.stream.Stream.ssl_set_certificate_file(str(identity.cert))
    ovs.stream.Stream.ssl_set_ca_cert_file(str(identity.ca))
