"""The certificate authority on disk: `init` once, `issue NAME` per hypervisor or controller.

Layout of a PKI directory: ca.crt / ca.key, then NAME.crt / NAME.key per identity. Keys are
ECDSA P-256 (cheap handshakes, accepted by OpenSSL in OVS and by Python) and written mode
0600; every certificate has a random 159-bit serial. Issuing a name again rotates it: a new
key and certificate replace the old ones atomically (a reader sees the old file or the new
one, never half of one), which is how a running OVS picks up a new certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hypetunnel.errors import HypeTunnelError

CA_NAME = "ca"
CA_DAYS = 3650
CERT_DAYS = 365
# A name is a hypervisor's or controller's name: it becomes a file name, a CN and a DNS SAN.
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})$")
_CLOCK_SKEW = dt.timedelta(minutes=5)  # valid a little before now: peers' clocks differ


class PkiError(HypeTunnelError):
    """A PKI operation could not be done; nothing was written."""


@dataclass(frozen=True)
class CertificateInfo:
    name: str  # file stem
    common_name: str
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    is_ca: bool
    sans: tuple[str, ...]

    def expires_in(self, now: dt.datetime | None = None) -> dt.timedelta:
        return self.not_after - (now or dt.datetime.now(dt.UTC))


def check_name(name: str, field: str = "NAME") -> str:
    if not _NAME.match(name):
        raise PkiError(f"{field}: {name!r} is not a valid certificate name (1-63 characters: "
                       "letters, digits, '.', '_', '-'; starting with a letter or digit)")
    if name == CA_NAME:
        raise PkiError(f"{field}: {name!r} is reserved for the CA itself")
    return name


def _check_days(days: int) -> None:
    if not 1 <= days <= 36500:
        raise PkiError(f"--days: {days} is out of range (1-36500)")


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write through a temporary file and rename: readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)  # the umask may have narrowed it; a key must be exactly 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, key = directory / f"{CA_NAME}.crt", directory / f"{CA_NAME}.key"
    if not (crt.is_file() and key.is_file()):
        raise PkiError(f"--dir: {directory} has no CA (run `hypetunnel pki init --dir "
                       f"{directory}` first)")
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError) as e:
        raise PkiError(f"--dir: cannot read the CA in {directory}: {e}") from e
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise PkiError(f"--dir: the CA key in {directory} is not an ECDSA key")
    return cert, private


def init_ca(directory: Path, *, common_name: str = "HypeTunnel CA",
            days: int = CA_DAYS) -> Path:
    """Create the CA in `directory` unless it already has one (then it is kept: replacing it
    would orphan every certificate issued). Returns the CA certificate's path."""
    _check_days(days)
    directory = Path(directory)
    crt = directory / f"{CA_NAME}.crt"
    if crt.is_file():
        _load_ca(directory)  # an existing CA must at least be readable
        return crt
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(directory / f"{CA_NAME}.key", _key_pem(key), 0o600)
    _write_private(crt, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return crt


def _ip_sans(ips: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for raw in ips:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(raw)))
        except ValueError as e:
            raise PkiError(f"--ip: {raw!r} is not an IP address") from e
    return out


def issue(directory: Path, name: str, *, ips: Iterable[str] = (), dns: Iterable[str] = (),
          days: int = CERT_DAYS) -> tuple[Path, Path]:
    """Issue (or rotate) the certificate of `name`: CN=name, SAN DNS:name (+ extra DNS names
    and IP addresses), usable as both TLS server and client (a controller serves OpenFlow and
    calls OVSDB; a hypervisor does the reverse). Returns (certificate, key) paths."""
    check_name(name)
    _check_days(days)
    directory = Path(directory)
    sans: list[x509.GeneralName] = [x509.DNSName(name)]
    sans += [x509.DNSName(check_name(d, "--dns")) for d in dns if d != name]
    sans += _ip_sans(ips)  # validated before the CA is read or any file is touched
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True,
                                         key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    crt_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    # Certificate first, key last. Open vSwitch (3.1's stream_ssl_set_key_and_cert, called on
    # every trip through ovs-vswitchd's and ovsdb-server's main loops) reloads the pair only
    # when the KEY's mtime changed and then the certificate's too: a look between a key-first
    # pair of writes records the new key, finds the old certificate, loads nothing, and never
    # looks at the certificate again, so the switch kept presenting the old one (CI of
    # 3afda4f). With the key last, a look between finds the key unchanged and records nothing.
    # A reader that pairs the files itself (reload.py) sees a new certificate with the old key
    # in between, fails to pair them, and keeps its current pair.
    _write_private(crt_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write_private(key_path, _key_pem(key), 0o600)
    return crt_path, key_path


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return (*(f"DNS:{d}" for d in ext.get_values_for_type(x509.DNSName)),
            *(f"IP:{i}" for i in ext.get_values_for_type(x509.IPAddress)))


def _info(path: Path) -> CertificateInfo:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertificateInfo(name=path.stem, common_name=str(cns[0].value) if cns else "",
                           serial=cert.serial_number, not_before=cert.not_valid_before_utc,
                           not_after=cert.not_valid_after_utc, is_ca=is_ca, sans=_sans(cert))


def list_certificates(directory: Path) -> list[CertificateInfo]:
    """Every certificate in the directory, the CA first, then by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PkiError(f"--dir: {directory} does not exist")
    out = []
    for path in sorted(directory.glob("*.crt")):
        try:
            out.append(_info(path))
        except (OSError, ValueError) as e:
            raise PkiError(f"{path}: not a readable PEM certificate: {e}") from e
    return sorted(out, key=lambda c: (not c.is_ca, c.name))
