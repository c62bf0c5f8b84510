"""Ed25519 keys: signers, OpenSSH fingerprints, allowed signers and revocations.

- A ``Signer`` holds an Ed25519 private key. Its ``keyid`` is the OpenSSH
  fingerprint ``SHA256:<unpadded base64 of SHA-256(ssh wire public key)>``,
  the same string ``ssh-keygen -lf`` prints.
- Private keys are OpenSSH files (``-----BEGIN OPENSSH PRIVATE KEY-----``),
  optionally passphrase-encrypted (bcrypt-pbkdf + AES, as ``ssh-keygen``
  writes them). A file readable or writable by group or others is refused,
  as OpenSSH does.
- ``allowed_signers`` uses Git's SSH-signing format (ssh-keygen(1), "ALLOWED
  SIGNERS"): ``principals [options] ssh-ed25519 <base64> [comment]`` with the
  options ``valid-after="…"``, ``valid-before="…"``, ``namespaces="…"``.
- ``revoked_signers`` (mreg's own, same shape without principals):
  ``[revoked-after="…"] ssh-ed25519 <base64> [comment]``. Without
  ``revoked-after`` the key is revoked for all time.

Times in those files are ``YYYYMMDD[HHMM[SS]][Z]`` and are read as UTC
(ssh-keygen reads a time without ``Z`` as local time; mreg always writes ``Z``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import LedgerError

KEY_TYPE = "ssh-ed25519"
NAMESPACE = "mreg"


class KeyProblem(LedgerError):
    """Base for key problems: files, formats, trust lists."""

    exit_code = 2


class KeyFileError(KeyProblem):
    """A private key file is missing, unreadable, too open, or not an Ed25519 OpenSSH key."""


class AllowedSignersError(KeyProblem):
    """A line of allowed_signers or revoked_signers cannot be parsed."""


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def ssh_blob(public: bytes) -> bytes:
    """The SSH wire encoding of an Ed25519 public key (string "ssh-ed25519", string key)."""
    return _ssh_string(KEY_TYPE.encode()) + _ssh_string(public)


def fingerprint(public: bytes) -> str:
    """OpenSSH fingerprint ``SHA256:…`` (unpadded standard base64) of a raw 32-byte public key."""
    digest = hashlib.sha256(ssh_blob(public)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def public_line(public: bytes, comment: str = "") -> str:
    """``ssh-ed25519 AAAA… comment`` as in ``id_ed25519.pub``."""
    line = f"{KEY_TYPE} {base64.b64encode(ssh_blob(public)).decode()}"
    return f"{line} {comment}" if comment else line


def parse_public_key(keytype: str, b64: str, where: str = "") -> bytes:
    """The raw 32-byte key from an ``ssh-ed25519 <base64>`` pair; raise ``AllowedSignersError``."""
    if keytype != KEY_TYPE:
        raise AllowedSignersError(f"{where}key type {keytype!r} is not supported", found=keytype,
                                  hint="mreg signs with Ed25519 keys only (ssh-ed25519)")
    try:
        blob = base64.b64decode(b64, validate=True)
    except ValueError:
        raise AllowedSignersError(f"{where}public key is not base64", found=b64[:20],
                                  hint="copy the line from the .pub file unchanged") from None
    if blob[:4] != struct.pack(">I", 11) or blob[4:15] != KEY_TYPE.encode() or len(blob) != 51 \
            or blob[15:19] != struct.pack(">I", 32):
        raise AllowedSignersError(f"{where}public key blob is not an ssh-ed25519 key", found=b64[:20],
                                  hint="copy the line from the .pub file unchanged")
    return blob[19:]


def parse_public_line(line: str) -> tuple[bytes, str]:
    """(raw public key, comment) of ``ssh-ed25519 AAAA… [comment]``."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise AllowedSignersError(f"not a public key line: {line!r}",
                                  hint="expected `ssh-ed25519 AAAA... comment`")
    return parse_public_key(parts[0], parts[1]), parts[2] if len(parts) > 2 else ""


class Signer:
    """An Ed25519 private key with its OpenSSH identity."""

    def __init__(self, private_key: Ed25519PrivateKey, comment: str = "") -> None:
        self._key = private_key
        self.comment = comment
        self.public_key = private_key.public_key()
        self.public = self.public_key.public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
        self.keyid = fingerprint(self.public)

    @property
    def public_line(self) -> str:
        return public_line(self.public, self.comment)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    @property
    def seed(self) -> bytes:
        return self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                       serialization.NoEncryption())

    @classmethod
    def generate(cls, comment: str = "") -> Signer:
        return cls(Ed25519PrivateKey.generate(), comment)

    @classmethod
    def from_seed(cls, seed: bytes, comment: str = "") -> Signer:
        return cls(Ed25519PrivateKey.from_private_bytes(seed), comment)

    @classmethod
    def load(cls, path: str | Path, passphrase: bytes | str | None = None) -> Signer:
        """Read an OpenSSH Ed25519 private key (encrypted with a passphrase or not)."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyFileError(f"no private key at {path}", path=str(path),
                               hint="run `mreg keys generate` or set MREG_KEY to your key") from None
        except OSError as exc:
            raise KeyFileError(f"cannot read {path}: {exc.strerror}", path=str(path),
                               hint="check the file's owner and permissions") from None
        if isinstance(passphrase, str):
            passphrase = passphrase.encode()
        try:
            key = serialization.load_ssh_private_key(data, passphrase)
        except TypeError as exc:
            text = str(exc)
            protected = "encrypted" in text or "password-protected" in text
            hint = ("set MREG_KEY_PASSPHRASE to the key's passphrase" if protected
                    else "this key is not encrypted; unset MREG_KEY_PASSPHRASE")
            raise KeyFileError(f"{path}: {text}", path=str(path), hint=hint) from None
        except (ValueError, UnsupportedAlgorithm) as exc:
            if passphrase and "checksum" in str(exc):
                raise KeyFileError(f"{path}: wrong passphrase", path=str(path),
                                   hint="check MREG_KEY_PASSPHRASE") from None
            raise KeyFileError(f"{path}: not an OpenSSH private key ({exc})", path=str(path),
                               hint="use an ed25519 key made by `ssh-keygen -t ed25519` or "
                                    "`mreg keys generate`") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: {type(key).__name__} is not an Ed25519 key", path=str(path),
                               hint="mreg signs with Ed25519 keys (`ssh-keygen -t ed25519`)")
        comment = ""
        pub = path.with_name(path.name + ".pub")
        if pub.is_file():
            parts = pub.read_text(encoding="utf-8").split(None, 2)
            comment = parts[2].strip() if len(parts) > 2 else ""
        return cls(key, comment)

    def save(self, path: str | Path, passphrase: bytes | None = None) -> Path:
        """Write the key (OpenSSH format, mode 0600) and ``<path>.pub``; refuse to overwrite."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
               else serialization.NoEncryption())
        data = self._key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH, enc)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyFileError(f"{path} already exists", path=str(path),
                               hint="choose another path (--out) or remove the old key first") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(path, 0o600)
        path.with_name(path.name + ".pub").write_text(self.public_line + "\n", encoding="utf-8")
        return path


def check_private_permissions(path: Path) -> None:
    """Refuse a private key file that group or others may read or write (as OpenSSH does)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"no private key at {path}", path=str(path),
                           hint="run `mreg keys generate` or set MREG_KEY to your key") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"private key {path} is accessible by others (mode {stat.S_IMODE(mode):04o})",
                           path=str(path), found=f"{stat.S_IMODE(mode):04o}", expected="0600",
                           hint=f"chmod 600 {path}")


def load_signer(path: str | Path, passphrase: bytes | str | None = None) -> Signer:
    """Load the signing key at ``path``; refuses group/world-accessible files.

    The passphrase of an encrypted key comes from ``passphrase`` or the
    environment variable ``MREG_KEY_PASSPHRASE``.
    """
    path = Path(path)
    check_private_permissions(path)
    if passphrase is None and os.environ.get("MREG_KEY_PASSPHRASE"):
        passphrase = os.environ["MREG_KEY_PASSPHRASE"]
    return Signer.load(path, passphrase)


def verifier(public: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(public)


def verify_signature(public_key: Ed25519PublicKey, sig: bytes, data: bytes) -> bool:
    try:
        public_key.verify(sig, data)
        return True
    except InvalidSignature:
        return False


# --- allowed_signers and revoked_signers ---------------------------------------------------

def parse_ssh_time(text: str, where: str = "") -> datetime:
    """``YYYYMMDD[HHMM[SS]][Z]`` as a UTC datetime."""
    raw = text[:-1] if text.endswith("Z") else text
    formats = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    fmt = formats.get(len(raw))
    try:
        if fmt is None or not raw.isdigit():
            raise ValueError
        return datetime.strptime(raw, fmt).replace(tzinfo=timezone.utc)
    except ValueError:
        raise AllowedSignersError(f"{where}time {text!r} is not YYYYMMDD[HHMM[SS]][Z]", found=text,
                                  hint='write e.g. valid-after="20260101000000Z"') from None


def format_ssh_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y%m%d%H%M%SZ")


def _tokens(line: str) -> list[str]:
    """Split on blanks outside double quotes (quotes kept)."""
    out, cur, quoted = [], [], False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        if ch in " \t" and not quoted:
            if cur:
                out.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def _options(text: str, where: str) -> dict[str, str | bool]:
    opts: dict[str, str | bool] = {}
    # Options are comma-separated; quoted values may contain commas.
    items, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    items.append("".join(cur))
    for item in items:
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        if eq:
            if not (len(value) >= 2 and value[0] == '"' and value[-1] == '"'):
                raise AllowedSignersError(f'{where}option {name} needs a quoted value', found=item,
                                          hint=f'write {name}="..."')
            opts[name] = value[1:-1]
        else:
            opts[name] = True
    return opts


@dataclass(frozen=True)
class AllowedSigner:
    """One line of allowed_signers."""

    principals: tuple[str, ...]
    public: bytes
    keyid: str
    valid_after: datetime | None = None
    valid_before: datetime | None = None
    namespaces: tuple[str, ...] | None = None
    comment: str = ""
    line: int = 0

    def covers(self, moment: datetime) -> bool:
        if self.namespaces is not None and NAMESPACE not in self.namespaces:
            return False
        if self.valid_after is not None and moment < self.valid_after:
            return False
        if self.valid_before is not None and moment >= self.valid_before:
            return False
        return True

    def to_line(self) -> str:
        opts = []
        if self.namespaces is not None:
            opts.append(f'namespaces="{",".join(self.namespaces)}"')
        if self.valid_after is not None:
            opts.append(f'valid-after="{format_ssh_time(self.valid_after)}"')
        if self.valid_before is not None:
            opts.append(f'valid-before="{format_ssh_time(self.valid_before)}"')
        parts = [",".join(self.principals)] + ([",".join(opts)] if opts else [])
        parts.append(public_line(self.public, self.comment))
        return " ".join(parts)


@dataclass(frozen=True)
class Revocation:
    """One line of revoked_signers: the key is revoked from ``revoked_after`` (None: always)."""

    public: bytes
    keyid: str
    revoked_after: datetime | None = None
    comment: str = ""
    line: int = 0

    def covers(self, moment: datetime) -> bool:
        return self.revoked_after is None or moment >= self.revoked_after

    def to_line(self) -> str:
        opt = f'revoked-after="{format_ssh_time(self.revoked_after)}" ' if self.revoked_after else ""
        return opt + public_line(self.public, self.comment)


def _split_key(tokens: list[str], where: str) -> tuple[dict, bytes, str]:
    opts: dict = {}
    if tokens and tokens[0] != KEY_TYPE and not tokens[0].startswith(("ssh-", "ecdsa-", "sk-")):
        opts = _options(tokens[0], where)
        tokens = tokens[1:]
    if len(tokens) < 2:
        raise AllowedSignersError(f"{where}expected `<keytype> <base64 key>`",
                                  hint="copy the line from the .pub file")
    public = parse_public_key(tokens[0], tokens[1], where)
    return opts, public, " ".join(tokens[2:])


def parse_allowed_signers(text: str, path: str = "allowed_signers") -> list[AllowedSigner]:
    """Parse Git's SSH allowed_signers format; blank lines and ``#`` comments are skipped."""
    out: list[AllowedSigner] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{n}: "
        tokens = _tokens(line)
        principals = tuple(p for p in tokens[0].strip('"').split(",") if p)
        opts, public, comment = _split_key(tokens[1:], where)
        if opts.get("cert-authority"):
            raise AllowedSignersError(f"{where}cert-authority lines are not supported",
                                      hint="list each signer's own key")
        unknown = set(opts) - {"valid-after", "valid-before", "namespaces"}
        if unknown:
            raise AllowedSignersError(f"{where}unknown option(s) {', '.join(sorted(unknown))}",
                                      hint="allowed: valid-after, valid-before, namespaces")
        ns = opts.get("namespaces")
        out.append(AllowedSigner(
            principals=principals, public=public, keyid=fingerprint(public),
            valid_after=parse_ssh_time(opts["valid-after"], where) if "valid-after" in opts else None,
            valid_before=parse_ssh_time(opts["valid-before"], where) if "valid-before" in opts else None,
            namespaces=tuple(ns.split(",")) if isinstance(ns, str) else None,
            comment=comment, line=n))
    return out


def parse_revoked_signers(text: str, path: str = "revoked_signers") -> list[Revocation]:
    out: list[Revocation] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{n}: "
        opts, public, comment = _split_key(_tokens(line), where)
        unknown = set(opts) - {"revoked-after"}
        if unknown:
            raise AllowedSignersError(f"{where}unknown option(s) {', '.join(sorted(unknown))}",
                                      hint='the only option is revoked-after="YYYYMMDDHHMMSSZ"')
        after = opts.get("revoked-after")
        out.append(Revocation(public=public, keyid=fingerprint(public),
                              revoked_after=parse_ssh_time(after, where) if after else None,
                              comment=comment, line=n))
    return out


@dataclass
class Trust:
    """Who may sign statements and when: allowed signers minus revocations.

    ``judge(keyid, moment)`` returns None when the key may sign at ``moment``,
    else the name of the problem: ``unknown-key``, ``revoked-key`` or
    ``key-validity`` (listed, but outside every valid-after/valid-before window).
    """

    signers: list[AllowedSigner] = field(default_factory=list)
    revocations: list[Revocation] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.public_keys: dict[str, Ed25519PublicKey] = {}
        self._by_keyid: dict[str, list[AllowedSigner]] = {}
        self._revoked: dict[str, list[Revocation]] = {}
        for s in self.signers:
            self._by_keyid.setdefault(s.keyid, []).append(s)
            if s.keyid not in self.public_keys:
                self.public_keys[s.keyid] = verifier(s.public)
        for r in self.revocations:
            self._revoked.setdefault(r.keyid, []).append(r)
        # keys valid at every moment: an unconditional line and no revocation (judged in O(1))
        self._always = {k for k, es in self._by_keyid.items() if k not in self._revoked and any(
            e.valid_after is None and e.valid_before is None and e.namespaces is None for e in es)}

    def __getstate__(self) -> dict:  # public key objects do not pickle; rebuild them
        return {"signers": self.signers, "revocations": self.revocations}

    def __setstate__(self, state: dict) -> None:
        self.signers = state["signers"]
        self.revocations = state["revocations"]
        self.__post_init__()

    @classmethod
    def from_files(cls, allowed: Path, revoked: Path | None = None) -> Trust:
        signers = (parse_allowed_signers(allowed.read_text(encoding="utf-8"), str(allowed))
                   if allowed.is_file() else [])
        revs = (parse_revoked_signers(revoked.read_text(encoding="utf-8"), str(revoked))
                if revoked is not None and revoked.is_file() else [])
        return cls(signers, revs)

    def entries(self, keyid: str) -> list[AllowedSigner]:
        return self._by_keyid.get(keyid, [])

    def revoked(self, keyid: str, moment: datetime | None = None) -> Revocation | None:
        for r in self._revoked.get(keyid, []):
            if moment is None or r.covers(moment):
                return r
        return None

    def always_valid(self, keyid: str) -> bool:
        """True when ``keyid`` may sign at any moment (no window, no revocation)."""
        return keyid in self._always

    def judge(self, keyid: str, moment: datetime) -> str | None:
        if keyid in self._always:
            return None
        entries = self._by_keyid.get(keyid)
        if not entries:
            return "unknown-key"
        if self.revoked(keyid, moment) is not None:
            return "revoked-key"
        if not any(e.covers(moment) for e in entries):
            return "key-validity"
        return None
