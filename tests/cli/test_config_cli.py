"""Configuration errors through the real CLI: exit 2 naming the file, the key and the fix; exit 3 naming an unreachable target."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def mreg(*args: str, cwd) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "registry.cli.main", *args], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def project(mreg_project):
    return mreg_project


def write_config(project, text: str):
    path = project / "mreg.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_lines(stderr: str) -> tuple[str, str]:
    """The one line an error prints, split into its message and its hint."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mreg: error: "), stderr
    message, _, hint = lines[0].partition(" (hint: ")
    return message, hint.removesuffix(")")


def test_unknown_target_type_exits_2_naming_file_key_and_fix(project):
    path = write_config(project, '[targets.main]\ntype = "mysql"\nurl = "mysql://127.0.0.1/x"\n')
    code, out, err = mreg("config", "show", cwd=project)
    assert code == 2, err
    line, hint = error_lines(err)
    assert str(path) in line and "targets.main.type" in line and "mysql" in line
    assert "postgresql" in hint and "timescale" in hint and "neo4j" in hint and "redis" in hint
    assert out == ""


def test_a_target_option_its_type_does_not_read_exits_2_with_the_closest_one(project):
    """A typo in [targets.X.options] is refused, not silently ignored: the message names the file,
    the key and the closest option; the hint lists the options of that target type."""
    path = write_config(project, '[targets.main]\ntype = "postgresql"\nurl = "dev"\n'
                                 '[targets.main.options]\ngroup_comit = false\n')
    code, out, err = mreg("config", "show", cwd=project)
    assert code == 2, err
    line, hint = error_lines(err)
    assert str(path) in line and "unknown postgresql option targets.main.options.group_comit" in line
    assert "did you mean group_commit?" in line
    assert "backfill_sparse_wal" in hint and "cancel_blocking_autovacuum" in hint and "lock_name" not in hint
    # an option of another type is refused too; each type's own options load
    write_config(project, '[targets.cache]\ntype = "redis"\nurl = "dev"\n[targets.cache.options]\n'
                          'mirror_schema = "x"\n')
    code, _, err = mreg("config", "show", cwd=project)
    assert code == 2 and "unknown redis option targets.cache.options.mirror_schema" in err
    from registry.config import KNOWN_OPTIONS

    for kind, known in KNOWN_OPTIONS.items():
        body = "".join(f'{k} = "1"\n' for k in sorted(known))
        write_config(project, f'[targets.t]\ntype = "{kind}"\nurl = "dev"\n[targets.t.options]\n{body}')
        code, out, err = mreg("config", "show", "--json", cwd=project)
        assert code == 0, (kind, err)


def test_env_reference_to_an_unset_variable_exits_2(project, monkeypatch):
    monkeypatch.delenv("MREG_TEST_UNSET_DSN", raising=False)
    path = write_config(project, '[targets.main]\ntype = "postgresql"\nurl = "env:MREG_TEST_UNSET_DSN"\n')
    code, _, err = mreg("config", "show", cwd=project)
    assert code == 2, err
    line, hint = error_lines(err)
    assert str(path) in line and "targets.main.url" in line and "MREG_TEST_UNSET_DSN" in line
    assert "export MREG_TEST_UNSET_DSN" in hint


def test_env_reference_is_read_and_its_password_never_printed(project, monkeypatch):
    monkeypatch.setenv("MREG_TEST_SET_DSN", "postgresql://app:hunter2-secret@127.0.0.1:5999/app")
    write_config(project, '[targets.main]\ntype = "postgresql"\nurl = "env:MREG_TEST_SET_DSN"\n')
    code, out, err = mreg("config", "show", "--json", cwd=project)
    assert code == 0, err
    assert "hunter2-secret" not in out + err
    assert "postgresql://app:***@127.0.0.1:5999/app" in out


def test_toml_syntax_error_exits_2_naming_the_file_and_line(project):
    path = write_config(project, '[targets.main]\ntype = "postgresql"\nurl = "postgresql://x\n')
    code, _, err = mreg("config", "show", cwd=project)
    assert code == 2, err
    line, hint = error_lines(err)
    assert str(path) in line and "line 3" in line and "TOML" in line
    assert hint


def test_unknown_key_exits_2_naming_it(project):
    path = write_config(project, '[targets.main]\ntype = "redis"\nurll = "redis://127.0.0.1/0"\n')
    code, _, err = mreg("config", "show", cwd=project)
    assert code == 2, err
    line, hint = error_lines(err)
    assert str(path) in line and "targets.main.urll" in line and "url" in hint


def test_unreachable_server_exits_3_naming_the_target(project):
    # port 1 on loopback: nothing listens there, the connection is refused at once
    write_config(project, '[targets.orders]\ntype = "postgresql"\n'
                          'url = "postgresql://app:s3cret-pw@127.0.0.1:1/orders?connect_timeout=2"\n')
    (project / "migrations").mkdir()
    code, out, err = mreg("plan", "--target", "orders", cwd=project)
    assert code == 3, out + err
    line, _ = error_lines(err)
    assert "orders" in line and "s3cret-pw" not in err + out


def test_dev_target_without_dev_servers_exits_2_and_says_dev_up(project):
    # embedded defaults: every target is a dev server; none is running in this project
    (project / "migrations").mkdir()
    code, out, err = mreg("plan", "--target", "postgres", cwd=project)
    assert code == 2, out + err
    assert "mreg dev up" in err
