"""A throw-away Dovecot IMAP server for tests.

Dovecot comes from Debian (``apt-get install -y dovecot-imapd``). :func:`dovecot_server` writes a
minimal config into a temp dir (loopback, a free port, no TLS, plaintext auth, one passwd-file
user, maildir storage, every runtime dir inside the temp dir), runs ``dovecot -F -c <conf>`` in
the foreground (as root in CI too), waits until the port greets, and stops it at exit.

Helpers talk to it with imapclient: :func:`append_message` and :func:`reset_uidvalidity`.
"""

from __future__ import annotations

import contextlib
import getpass
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from imapclient import IMAPClient

DOVECOT_BINARY_CANDIDATES = ("dovecot", "/usr/sbin/dovecot")


def find_dovecot() -> str | None:
    """The dovecot binary, or None when it is not installed."""
    for name in DOVECOT_BINARY_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class DovecotServer:
    """Where the test server listens and who may log in."""

    host: str
    port: int
    username: str
    password: str
    root: Path
    """The temp dir holding config, logs and mail."""
    tls_port: int | None = None
    """Implicit-TLS (IMAPS) port when started with ``tls=True``; the plain port then offers
    STARTTLS too."""
    ca_file: Path | None = None
    """The self-signed certificate to trust (``ssl.create_default_context(cafile=...)``)."""

    @property
    def mail_dir(self) -> Path:
        return self.root / "mail" / self.username

    def client(self, timeout: float = 10.0) -> IMAPClient:
        """A logged-in imapclient connection (plain, no TLS). Caller closes it."""
        c = IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        c.login(self.username, self.password)
        return c

    @property
    def log_text(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _tls_files(root: Path) -> tuple[Path, Path]:
    """A throw-away self-signed certificate for 127.0.0.1 / localhost."""
    import ipaddress
    from datetime import UTC, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = root / "cert.pem", root / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _config(
    root: Path,
    port: int,
    internal: tuple[str, str],
    login: str,
    uid: int,
    gid: int,
    tls: tuple[int, Path, Path] | None = None,
) -> str:
    if tls is None:
        ssl_lines = "ssl = no"
        imaps = "port = 0"
    else:
        tls_port, cert, key = tls
        ssl_lines = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\nssl_min_protocol = TLSv1.2"
        imaps = f"address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes"
    return f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
instance_name = crm-test-{port}
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
{ssl_lines}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal[0]}
default_internal_group = {internal[1]}
default_login_user = {login}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:{root}/mail/%u
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = create
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    {imaps}
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
service pop3-login {{
  chroot =
}}
service submission-login {{
  chroot =
}}
service stats {{
  chroot =
}}
protocol imap {{
  imap_idle_notify_interval = 1 secs
}}
"""


def _wait_for_greeting(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dovecot exited early with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                s.settimeout(2.0)
                if s.recv(64).startswith(b"* OK"):
                    return
        except OSError as exc:
            last_exc = exc
        time.sleep(0.05)
    raise RuntimeError(f"dovecot did not answer on {host}:{port}: {last_exc}")


def _run_as() -> tuple[tuple[str, str], str]:
    """(internal user, group) and login user for the processes dovecot forks.

    As a normal user everything runs as that user. As root (CI), Dovecot refuses to run its login
    processes as root, so they use Debian's unprivileged ``dovenull`` and ``dovecot`` accounts
    (created by the package); mail is stored as ``dovecot`` too (a userdb uid of 0 is refused).
    """
    uid = os.getuid()
    if uid != 0:
        me = getpass.getuser()
        return (me, grp.getgrgid(os.getgid()).gr_name), me
    internal = "dovecot"
    login = "dovenull"
    for name in (internal, login):
        try:
            pwd.getpwnam(name)
        except KeyError as exc:  # pragma: no cover - the Debian package creates them
            raise RuntimeError(f"system user {name!r} missing; reinstall dovecot-core") from exc
    return (internal, grp.getgrgid(pwd.getpwnam(internal).pw_gid).gr_name), login


@contextlib.contextmanager
def dovecot_server(
    parent_dir: Path | None = None,
    *,
    username: str = "crm-test",
    password: str = "s3cret-Pass",
    tls: bool = False,
) -> Iterator[DovecotServer]:
    """Run a private Dovecot for the duration of the ``with`` block.

    Everything lives in a fresh directory made under ``parent_dir`` (default: the system temp dir)
    with mode 0755, so the unprivileged login/auth processes can reach their sockets even when
    ``parent_dir`` itself is private; it is removed at exit.
    """
    binary = find_dovecot()
    if binary is None:
        raise RuntimeError("dovecot is not installed (apt-get install -y dovecot-imapd)")
    root = Path(tempfile.mkdtemp(prefix="dovecot-", dir=parent_dir)).resolve()
    os.chmod(root, 0o755)
    for sub in ("run", "state", "mail", "home"):
        (root / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
    internal, login = _run_as()
    mail_user = pwd.getpwnam(internal[0])
    uid, gid = mail_user.pw_uid, mail_user.pw_gid
    if os.getuid() == 0:
        for sub in ("mail", "home"):
            os.chown(root / sub, uid, gid)
    port = free_port()
    users = root / "users"
    users.write_text(f"{username}:{{PLAIN}}{password}\n")
    users.chmod(0o644)
    conf = root / "dovecot.conf"
    tls_port: int | None = None
    cert: Path | None = None
    tls_conf: tuple[int, Path, Path] | None = None
    if tls:
        cert, key = _tls_files(root)
        tls_port = free_port()
        tls_conf = (tls_port, cert, key)
    conf.write_text(_config(root, port, internal, login, uid, gid, tls_conf))
    server = DovecotServer("127.0.0.1", port, username, password, root, tls_port, cert)
    stderr_path = root / "dovecot.stderr"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                [binary, "-F", "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            _wait_for_greeting(server.host, port, proc, timeout=15.0)
        except RuntimeError as exc:
            err = stderr_path.read_text(errors="replace")
            raise RuntimeError(f"{exc}\nstderr: {err}\nlog: {server.log_text}") from exc
        yield server
    finally:
        if proc is not None:
            # Its own session (start_new_session): the group is dovecot and its children only.
            # The state is throw-away, so no graceful shutdown (that takes a second per test).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def append_message(
    server: DovecotServer,
    folder: str,
    raw: bytes,
    *,
    msg_time: datetime | None = None,
    flags: tuple[bytes, ...] = (),
) -> None:
    """APPEND one raw message to ``folder`` (created when missing)."""
    with contextlib.closing(_Closing(server.client())) as holder:
        c = holder.client
        if not c.folder_exists(folder):
            c.create_folder(folder)
        c.append(folder, raw, flags=flags, msg_time=msg_time)


def folder_status(server: DovecotServer, folder: str) -> dict[bytes, int]:
    with contextlib.closing(_Closing(server.client())) as holder:
        return holder.client.folder_status(folder, [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"])


def folder_path(server: DovecotServer, folder: str) -> Path:
    """The maildir of ``folder`` (Maildir++: INBOX is the root, the others ``.Name``)."""
    if folder.upper() == "INBOX":
        return server.mail_dir
    return server.mail_dir / ("." + folder.replace("/", "."))


def reset_uidvalidity(server: DovecotServer, folder: str) -> tuple[int, int]:
    """Give ``folder`` a new UIDVALIDITY keeping its messages, as an index rebuild on a server does.

    Removes the folder's ``dovecot-uidlist`` and index files; Dovecot rebuilds them on next access
    with a fresh UIDVALIDITY (taken from the clock) and renumbers the messages from UID 1. Works for
    INBOX too (which IMAP cannot delete). Returns (old UIDVALIDITY, new UIDVALIDITY).
    """
    old = int(folder_status(server, folder)[b"UIDVALIDITY"])
    path = folder_path(server, folder)
    time.sleep(1.1)  # UIDVALIDITY is a timestamp: make sure the new one differs
    for item in path.iterdir():
        if item.name == "dovecot-uidlist" or item.name.startswith("dovecot.index"):
            item.unlink()
    new = int(folder_status(server, folder)[b"UIDVALIDITY"])
    if new == old:
        raise RuntimeError("UIDVALIDITY did not change")
    return old, new


class _Closing:
    def __init__(self, client: IMAPClient) -> None:
        self.client = client

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.logout()
