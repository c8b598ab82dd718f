"""A real OpenLDAP ``slapd`` on loopback for tests: our own instance, never the system one.

:class:`Slapd` writes a ``slapd.conf`` into a temporary directory (mdb database,
the Debian schemas, ACLs like a real directory: anonymous may only bind, users
may read), makes a throw-away CA and server certificate so ``ldaps://`` and
StartTLS can be tested with a CA file, starts ``slapd -d 0`` in the foreground on
two free high ports, and stops it again.  :meth:`Slapd.load_tree` (re)creates the
test tree; helpers change it the way an administrator would.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import ldap
import ldap.modlist

from tests.support.processes import stop_process

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-secret-not-for-production"
SERVICE_DN = f"cn=fleetroom,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service-secret-for-the-tests"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


def find_slapd() -> str | None:
    """The slapd binary (Debian puts it in /usr/sbin, often not on PATH)."""
    return shutil.which("slapd") or (
        "/usr/sbin/slapd" if os.access("/usr/sbin/slapd", os.X_OK) else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost; returns (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fleetroom test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def other_ca(directory: Path) -> Path:
    """A CA file that did *not* sign the server's certificate."""
    sub = directory / "other"
    sub.mkdir(exist_ok=True)
    return _make_certificates(sub)[0]


class Slapd:
    """One slapd process with a temporary database (see the module docstring)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self._tmp = tempfile.TemporaryDirectory(prefix="fleetroom-slapd-")
        self.dir = Path(self._tmp.name)
        self.port = _free_port()
        self.tls_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.ca_file, self.cert_file, self.key_file = _make_certificates(self.dir)

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def log(self) -> str:
        path = self.dir / "slapd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_config(self) -> Path:
        (self.dir / "db").mkdir()
        includes = "\n".join(f"include /etc/ldap/schema/{s}.schema" for s in SCHEMAS)
        conf = self.dir / "slapd.conf"
        conf.write_text(f"""{includes}
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {self.dir}/slapd.pid
argsfile {self.dir}/slapd.args
TLSCACertificateFile {self.ca_file}
TLSCertificateFile {self.cert_file}
TLSCertificateKeyFile {self.key_file}

database mdb
maxsize 33554432
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {self.dir}/db
index objectClass eq
index uid,mail,member eq
access to attrs=userPassword by anonymous auth by self write by * none
access to * by users read by * none
""")
        return conf

    def start(self, timeout: float = 20) -> Slapd:
        conf = self._write_config()
        log = (self.dir / "slapd.log").open("wb")
        self.proc = subprocess.Popen(
            [self.binary, "-f", str(conf), "-h", f"{self.uri}/ {self.ldaps_uri}/", "-d", "0"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.proc.returncode}:\n{self.log}")
            try:
                self.admin().unbind_s()
                return self
            except ldap.SERVER_DOWN:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"slapd did not answer:\n{self.log}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc)
        self._tmp.cleanup()

    def __enter__(self) -> Slapd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- an administrator's view ----------------------------------------------------

    def admin(self) -> Any:
        """A connection bound as the directory's root DN."""
        conn = ldap.initialize(self.uri)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5)
        conn.simple_bind_s(ADMIN_DN, ADMIN_PASSWORD)
        return conn

    def add(self, dn: str, attrs: dict[str, list[str]]) -> None:
        conn = self.admin()
        try:
            conn.add_s(dn, ldap.modlist.addModlist(
                {k: [v.encode() for v in vs] for k, vs in attrs.items()}))
        finally:
            conn.unbind_s()

    def modify(self, dn: str, changes: list[tuple[int, str, list[str] | None]]) -> None:
        conn = self.admin()
        try:
            conn.modify_s(dn, [(op, attr, [v.encode() for v in values] if values else None)
                               for op, attr, values in changes])
        finally:
            conn.unbind_s()

    def delete(self, dn: str) -> None:
        conn = self.admin()
        try:
            conn.delete_s(dn)
        finally:
            conn.unbind_s()

    def rename(self, dn: str, new_rdn: str) -> None:
        conn = self.admin()
        try:
            conn.rename_s(dn, new_rdn, delold=1)
        finally:
            conn.unbind_s()

    def entry_uuid(self, dn: str) -> str:
        conn = self.admin()
        try:
            [(_dn, attrs)] = conn.search_s(dn, ldap.SCOPE_BASE, attrlist=["entryUUID"])
        finally:
            conn.unbind_s()
        return str(attrs["entryUUID"][0].decode())

    def add_to_group(self, group_dn: str, member_dn: str) -> None:
        self.modify(group_dn, [(ldap.MOD_ADD, "member", [member_dn])])

    def remove_from_group(self, group_dn: str, member_dn: str) -> None:
        self.modify(group_dn, [(ldap.MOD_DELETE, "member", [member_dn])])

    def add_person(self, uid: str, password: str, *, given_name: str, surname: str,
                   mail: str | None) -> str:
        dn = f"uid={uid},{PEOPLE}"
        attrs = {"objectClass": ["inetOrgPerson"], "uid": [uid],
                 "cn": [f"{given_name} {surname}"], "givenName": [given_name],
                 "sn": [surname], "userPassword": [password]}
        if mail:
            attrs["mail"] = [mail]
        self.add(dn, attrs)
        return dn

    def add_group(self, cn: str, members: list[str]) -> str:
        dn = f"cn={cn},{GROUPS}"
        # groupOfNames needs at least one member: the service account holds the place.
        self.add(dn, {"objectClass": ["groupOfNames"], "cn": [cn],
                      "member": [SERVICE_DN, *members]})
        return dn

    def load_tree(self) -> None:
        """Empty the directory and create the base tree: the organisation, the
        service account, ``ou=people`` and ``ou=groups`` (people and groups are the
        tests' own)."""
        conn = self.admin()
        try:
            try:
                entries = conn.search_s(SUFFIX, ldap.SCOPE_SUBTREE, attrlist=["1.1"])
            except ldap.NO_SUCH_OBJECT:
                entries = []
            for dn, _attrs in sorted(entries, key=lambda e: -e[0].count(",")):
                conn.delete_s(dn)
        finally:
            conn.unbind_s()
        self.add(SUFFIX, {"objectClass": ["dcObject", "organization"], "dc": ["example"],
                          "o": ["Example"]})
        for ou in ("people", "groups", "services"):
            self.add(f"ou={ou},{SUFFIX}", {"objectClass": ["organizationalUnit"], "ou": [ou]})
        self.add(SERVICE_DN, {"objectClass": ["person"], "cn": ["fleetroom"],
                              "sn": ["service"], "userPassword": [SERVICE_PASSWORD]})
