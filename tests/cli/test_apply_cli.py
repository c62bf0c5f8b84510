"""The engine's commands through the CLI: JSON shapes, exit codes, targets without a server."""

from __future__ import annotations

import json
import textwrap

import pytest

from registry.cli.main import run

COMMANDS = ("plan", "apply", "rollback", "status", "sync", "baseline", "repair")


def cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_engine_command_has_help(capsys, command):
    code, out, err = cli(capsys, command, "--help")
    assert code == 0 and "Usage: mreg " + command in out


def write(root, rel, text):
    path = root / "migrations" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def test_targets_without_a_server_are_reported_once_and_skipped(mreg_project, capsys):
    """Embedded defaults, no `mreg dev up`: read commands go on; naming a target is exit 2 with the remedy."""
    write(mreg_project, "20250101_000000_schema_t.sql", "-- Phase 1: EXPAND\nCREATE TABLE t (id int);\n")
    code, out, err = cli(capsys, "status", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [t["name"] for t in data["targets"]] == ["neo4j", "postgres", "redis", "timescale"]
    assert all(t["available"] is False and "mreg dev up" in t["error"] for t in data["targets"])
    code, out, err = cli(capsys, "apply")  # nothing could be applied: an error, not a success
    assert code == 2
    assert out.count("skipped [") == 4 and out.count("not available") == 4
    assert "no target could be reached: neo4j: " in err and "; timescale: " in err and "mreg dev up" in err
    code, out, err = cli(capsys, "apply", "--target", "postgres")
    assert code == 2 and "not running" in err and "mreg dev up" in err
    code, out, err = cli(capsys, "plan", "--json")
    assert code == 0 and json.loads(out)["unavailable"] == ["neo4j", "postgres", "redis", "timescale"]


def test_usage_errors_exit_2(mreg_project, capsys):
    assert cli(capsys, "apply", "--phase", "sideways")[0] == 2
    assert cli(capsys, "plan", "--target", "nope")[0] == 2
    code, out, err = cli(capsys, "apply", "--phase", "contract")
    assert code == 2 and "--confirm-contract" in err
    code, out, err = cli(capsys, "rollback", "--migration-id", "nope")
    assert code == 2 and "not a registered migration" in err


@pytest.fixture
def pg_project(mreg_project, pg_dsn):
    (mreg_project / "mreg.toml").write_text(f'[project]\nname = "test"\n[targets.main]\ntype = "postgresql"\n'
                                            f'url = "{pg_dsn}"\n')
    write(mreg_project, "20250101_000000_schema_a.sql", """
        -- Version: 1.0.0
        -- Phase 1: EXPAND
        CREATE TABLE a (id int);
        -- Phase 2: MIGRATE
        INSERT INTO a VALUES (1);
        -- Phase 3: CONTRACT
        ALTER TABLE a ALTER COLUMN id SET NOT NULL;
        -- Rollback (contract):
        ALTER TABLE a ALTER COLUMN id DROP NOT NULL;
    """)
    write(mreg_project, "20250102_000000_schema_b.sql", """
        -- Version: 1.1.0
        -- Dependencies: [20250101_000000_schema_a]
        -- Phase 1: EXPAND
        CREATE TABLE b (id int);
    """)
    return mreg_project


def test_plan_json_lists_ordered_steps(pg_project, capsys):
    code, out, err = cli(capsys, "plan", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [(s["migration"], s["phase"], s["target"]) for s in data["steps"]] == [
        ("20250101_000000_schema_a", "expand", "main"), ("20250101_000000_schema_a", "migrate", "main"),
        ("20250101_000000_schema_a", "contract", "main"), ("20250102_000000_schema_b", "expand", "main")]
    assert {"migration", "phase", "target", "tenant", "steps", "needs_confirmation"} <= set(data["steps"][0])
    code, out, err = cli(capsys, "plan", "--phase", "expand", "--json")
    assert [s["phase"] for s in json.loads(out)["steps"]] == ["expand", "expand"]
    code, out, err = cli(capsys, "plan", "--to", "20250101_000000_schema_a", "--json")
    assert {s["migration"] for s in json.loads(out)["steps"]} == {"20250101_000000_schema_a"}


def test_status_json_shape_with_partial_migration(pg_project, capsys):
    code, out, err = cli(capsys, "apply", "--phase", "expand")
    assert code == 0, err
    data = json.loads(cli(capsys, "status", "--json")[1])
    (t,) = data["targets"]
    assert {"name", "type", "version", "applied", "pending", "interrupted", "lock_holder"} <= set(t)
    assert t["name"] == "main" and t["type"] == "postgresql" and t["version"] == "1.1.0"
    assert t["applied"] == ["20250102_000000_schema_b"]
    assert t["pending"] == ["20250101_000000_schema_a"]
    assert t["partial"] == [{"id": "20250101_000000_schema_a", "phases_done": ["expand"],
                             "phases_pending": ["migrate", "contract"]}]
    assert t["interrupted"] == [] and t["lock_holder"] is None


def test_apply_json_records_and_verify_json_has_engine_checks(pg_project, capsys):
    code, out, err = cli(capsys, "apply", "--confirm-contract", "--json")
    assert code == 0, err
    records = json.loads(out)["records"]
    assert [r["event"] for r in records if r["event"] == "phase_succeeded"] == ["phase_succeeded"] * 4
    assert records[-1]["event"] == "finished"
    code, out, err = cli(capsys, "verify", "--json")
    data = json.loads(out)
    names = {c["name"] for c in data["checks"]}
    assert {"ledger", "mirror", "files"} <= names
    mirror = [c for c in data["checks"] if c["name"] == "mirror"][0]
    assert mirror["ok"] and mirror["data"]["rows"] == mirror["data"]["catalog"] == 8


def test_rollback_and_repair_json(pg_project, capsys):
    assert cli(capsys, "apply", "--confirm-contract")[0] == 0
    code, out, err = cli(capsys, "rollback", "--migration-id", "20250101_000000_schema_a", "--phase", "contract",
                         "--confirm", "--json")
    assert code == 0, err
    events = [r["event"] for r in json.loads(out)["records"]]
    assert "rollback_succeeded" in events
    code, out, err = cli(capsys, "repair", "20250101_000000_schema_a", "--json")
    assert code == 0 and json.loads(out)["repaired"] == []
    code, out, err = cli(capsys, "sync", "--json")
    assert code == 0 and json.loads(out)["targets"][0]["pulled"] == 0
