"""Keys: OpenSSH files (plain and encrypted), fingerprints, permissions, allowed/revoked signers."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone

import pytest

from ledger.keyring import generate_key
from ledger.keys import (AllowedSignersError, KeyFileError, Signer, Trust, load_signer, parse_allowed_signers,
                         parse_revoked_signers)

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")


def utc(*a):
    return datetime(*a, tzinfo=timezone.utc)


@needs_ssh_keygen
def test_fingerprint_matches_ssh_keygen(tmp_path):
    s = Signer.generate("t@x")
    s.save(tmp_path / "k")
    out = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == s.keyid


@needs_ssh_keygen
@pytest.mark.parametrize("passphrase", ["", "correct horse"])
def test_loads_keys_made_by_ssh_keygen(tmp_path, passphrase):
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "op@host", "-f", str(path)],
                   check=True)
    s = load_signer(path, passphrase or None)
    assert s.public_line.split()[:2] == (path.with_suffix(".pub").read_text().split()[:2])
    assert s.comment == "op@host"
    if passphrase:
        with pytest.raises(KeyFileError, match="encrypted|passphrase|password"):
            load_signer(path)
        with pytest.raises(KeyFileError):
            load_signer(path, "wrong")


def test_refuses_open_permissions_and_missing_files(tmp_path):
    s = Signer.generate()
    path = s.save(tmp_path / "k")
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_signer(path).keyid == s.keyid
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="accessible by others"):
        load_signer(path)
    with pytest.raises(KeyFileError, match="no private key"):
        load_signer(tmp_path / "missing")


def test_generate_refuses_a_path_inside_the_repository(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    with pytest.raises(KeyFileError, match="inside the repository"):
        generate_key(repo / "keys" / "id", comment="a", repo_root=repo, allowed_signers=repo / ".mreg/allowed_signers")
    s = generate_key(tmp_path / "home" / "id", comment="a@b", repo_root=repo,
                     allowed_signers=repo / ".mreg" / "allowed_signers")
    entries = parse_allowed_signers((repo / ".mreg" / "allowed_signers").read_text())
    assert [e.keyid for e in entries] == [s.keyid]


def test_allowed_signers_git_format_with_validity():
    a, b = Signer.generate("a"), Signer.generate("b")
    text = (f"# comment\n"
            f"alice@example.com,ops@example.com {a.public_line}\n"
            f'bob@example.com namespaces="git,mreg",valid-after="20260101",valid-before="202606301200Z" '
            f"{b.public_line}\n")
    entries = parse_allowed_signers(text)
    assert entries[0].principals == ("alice@example.com", "ops@example.com")
    assert entries[1].valid_after == utc(2026, 1, 1) and entries[1].valid_before == utc(2026, 6, 30, 12)
    trust = Trust(entries)
    assert trust.judge(b.keyid, utc(2026, 3, 1)) is None
    assert trust.judge(b.keyid, utc(2025, 12, 31)) == "key-validity"
    assert trust.judge(b.keyid, utc(2026, 6, 30, 12)) == "key-validity"
    assert trust.judge(Signer.generate().keyid, utc(2026, 3, 1)) == "unknown-key"
    git_only = parse_allowed_signers(f'x namespaces="git" {a.public_line}')
    assert Trust(git_only).judge(a.keyid, utc(2026, 3, 1)) == "key-validity"
    assert parse_allowed_signers(entries[1].to_line())[0] == entries[1].__class__(**{**entries[1].__dict__, "line": 1})


def test_revocations_take_effect_from_their_time():
    a = Signer.generate("a")
    trust = Trust(parse_allowed_signers(f"a {a.public_line}"),
                  parse_revoked_signers(f'revoked-after="20260301000000Z" {a.public_line}'))
    assert trust.judge(a.keyid, utc(2026, 2, 28)) is None
    assert trust.judge(a.keyid, utc(2026, 3, 1)) == "revoked-key"
    always = Trust(parse_allowed_signers(f"a {a.public_line}"), parse_revoked_signers(a.public_line))
    assert always.judge(a.keyid, utc(2000, 1, 1)) == "revoked-key"


@pytest.mark.parametrize("line", ["alice ssh-rsa AAAAB3NzaC1yc2E= x", 'alice valid-after=2026 ssh-ed25519 AAAA',
                                  'alice valid-after="2026-01-01" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea',
                                  "alice cert-authority ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea",
                                  "alice"])
def test_bad_allowed_signers_lines(line):
    with pytest.raises(AllowedSignersError):
        parse_allowed_signers(line)
