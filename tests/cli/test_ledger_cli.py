"""`mreg keys`, `mreg verify`, `mreg ledger show|prove|export`, `mreg audit` through the CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from ledger.merkle import leaf_hash


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    root.mkdir()
    # No targets: these tests are about the ledger (the engine's mirror checks have their own tests).
    (root / "mreg.toml").write_text('[project]\nname = "demo"\n\n[targets]\n', encoding="utf-8")
    monkeypatch.setenv("MREG_ROOT", str(root))
    monkeypatch.setenv("MREG_CATALOG", str(root / "catalog.db"))
    monkeypatch.setenv("MREG_KEY", str(tmp_path / "home" / "id_ed25519"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(root)
    return root


def mreg(*args: str):
    from registry.cli.main import run

    return run(list(args))


def mreg_out(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = mreg(*args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_keys_generate_list_trust_revoke_verify(project, tmp_path, capsys):
    code, out, _ = mreg_out(capsys, "keys", "generate", "--comment", "alice@example.com")
    assert code == 0 and "mode 0600" in out
    key = tmp_path / "home" / "id_ed25519"
    assert key.stat().st_mode & 0o777 == 0o600
    assert "alice@example.com" in (project / ".mreg" / "allowed_signers").read_text()
    assert mreg("keys", "generate", "--out", str(project / "id")) == 2  # inside the repository: refused

    bob = tmp_path / "bob"
    from ledger.keys import Signer
    bob_signer = Signer.generate("bob@example.com")
    bob_signer.save(bob)
    assert mreg("keys", "trust", str(bob) + ".pub", "--principal", "bob@example.com",
                "--valid-after", "20260101") == 0
    code, out, _ = mreg_out(capsys, "keys", "list", "--json")
    rows = json.loads(out)
    assert [r["principals"] for r in rows] == [["alice@example.com"], ["bob@example.com"]]
    assert mreg("keys", "revoke", bob_signer.keyid, "--reason", "laptop lost") == 0
    code, out, _ = mreg_out(capsys, "keys", "list", "--json")
    assert json.loads(out)[1]["status"].startswith("revoked")

    code, out, _ = mreg_out(capsys, "ledger", "show", "--json")
    logs = json.loads(out)
    assert logs[0]["origin"] == "demo/registry" and logs[0]["size"] == 2
    code, out, _ = mreg_out(capsys, "ledger", "show", "--origin", "registry", "--json")
    assert [e["type"] for e in json.loads(out)["events"]] == ["key_add", "key_revoke"]

    code, out, _ = mreg_out(capsys, "verify", "--json")
    assert code == 0 and json.loads(out)["ok"] is True


def test_verify_names_a_tampered_leaf_and_exits_1(project, capsys):
    assert mreg("keys", "generate", "--comment", "alice@example.com") == 0
    from ledger.keys import Signer
    other = Signer.generate("carol")
    for n in range(3):
        assert mreg("keys", "trust", other.public_line, "--principal", f"carol{n}") == 0
    conn = sqlite3.connect(project / "catalog.db")
    conn.execute("DROP TRIGGER ledger_leaves_no_update")
    leaf = conn.execute("SELECT leaf FROM ledger_leaves WHERE seq = 1").fetchone()[0]
    bad = leaf.replace(b'"seq":1', b'"seq":2')
    conn.execute("UPDATE ledger_leaves SET leaf = ?, leaf_hash = ? WHERE seq = 1", (bad, leaf_hash(bad)))
    conn.commit()
    conn.close()
    code, out, _ = mreg_out(capsys, "verify")
    assert code == 1
    assert "reordered: log=demo/registry seq=1 field=seq expected=1 found=2" in out
    assert "chain: log=demo/registry seq=2 field=prev" in out


def test_prove_export_and_audit(project, tmp_path, capsys):
    assert mreg("keys", "generate", "--comment", "alice@example.com") == 0
    from ledger.keys import Signer
    for n in range(5):
        assert mreg("keys", "trust", Signer.generate().public_line, "--principal", f"p{n}") == 0
    code, out, _ = mreg_out(capsys, "ledger", "prove", "--inclusion", "3")
    assert code == 0 and out.startswith("c2sp.org/tlog-proof@v1\nindex 3\n") and "\n— demo/registry " in out
    code, out, _ = mreg_out(capsys, "ledger", "prove", "--consistency", "2", "5")
    assert code == 0 and out.startswith("mreg/tlog-consistency@v1\nold 2\nnew 5\n")
    assert mreg("ledger", "prove") == 2
    bundle = tmp_path / "bundle"
    assert mreg("ledger", "export", str(bundle)) == 0
    # the audit runs in a fresh process with no catalog and no Git in reach
    env_code = ("import sys; from registry.cli.main import run; sys.exit(run(['audit', sys.argv[1], '--json']))")
    proc = subprocess.run([sys.executable, "-c", env_code, str(bundle)], capture_output=True, text=True,
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True
    leaves = bundle / "logs" / "demo%2Fregistry" / "leaves"
    leaves.write_bytes(b"\n".join(leaves.read_bytes().split(b"\n")[:3]) + b"\n")  # truncate
    code, out, _ = mreg_out(capsys, "audit", str(bundle))
    assert code == 1 and "truncated: log=demo/registry" in out


def test_verify_uses_git_notes_as_anchors(project, capsys):
    import os

    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    subprocess.run(["git", "init", "-q"], cwd=project, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "c1"], cwd=project, check=True, env=env)
    assert mreg("keys", "generate", "--comment", "alice@example.com") == 0
    from ledger.keys import Signer
    for n in range(4):
        assert mreg("keys", "trust", Signer.generate().public_line, "--principal", f"p{n}") == 0
    from ledger.store import LedgerStore
    with LedgerStore(project / "catalog.db") as store:
        note = store.latest_checkpoint("demo/registry")
    subprocess.run(["git", "notes", "--ref=mreg", "add", "-f", "-F", "-", "HEAD"], cwd=project, check=True,
                   input=note, text=True, env=env)
    assert mreg("verify") == 0
    # an attacker truncates catalog.db and replaces its checkpoints with a valid re-signed one
    conn = sqlite3.connect(project / "catalog.db")
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DELETE FROM ledger_leaves WHERE seq >= 2")
    conn.execute("DELETE FROM ledger_nodes WHERE idx * (1 << level) + (1 << level) > 2")
    conn.execute("DELETE FROM ledger_checkpoints")
    conn.commit()
    conn.close()
    from ledger.keys import load_signer
    with LedgerStore(project / "catalog.db") as store:
        store.checkpoint("demo/registry", load_signer(os.environ["MREG_KEY"]))
    code, out, _ = mreg_out(capsys, "verify")
    assert code == 1 and "truncated: log=demo/registry seq=2 field=size expected=>= 4 found=2" in out


def test_witness_cosign_and_policy_quorum(project, tmp_path, capsys):
    assert mreg("keys", "generate", "--comment", "alice@example.com") == 0
    from ledger.keys import Signer
    assert mreg("keys", "trust", Signer.generate().public_line, "--principal", "bob") == 0
    wkey = tmp_path / "witness"
    Signer.generate("w").save(wkey)
    code, out, _ = mreg_out(capsys, "ledger", "cosign", "--key", str(wkey), "--name", "w.example/1")
    assert code == 0
    policy_line = out.strip().splitlines()[-1].split(": ", 1)[1]
    pub = (project / ".mreg" / "allowed_signers").read_text().split("\n")[0].split(" ", 1)[1]
    (project / ".mreg" / "policy").write_text(f"log {pub}\n{policy_line}\nquorum 1\n")
    assert mreg("verify") == 0
    # one more append: its checkpoint has no cosignature yet, so the policy's quorum fails
    assert mreg("keys", "trust", Signer.generate().public_line, "--principal", "carol") == 0
    code, out, _ = mreg_out(capsys, "verify")
    assert code == 1 and "checkpoint-signature: log=demo/registry seq=1 field=cosignature" in out
    assert mreg("ledger", "cosign", "--key", str(wkey), "--name", "w.example/1") == 0
    assert mreg("verify") == 0
