"""Target options read as booleans (registry.config.Target.flag)."""

from __future__ import annotations


def test_target_flags_read_toml_booleans_and_yes_no_words():
    from registry.config import Target

    t = Target("main", "postgresql", "dev", "test", {"a": False, "b": "off", "c": "Yes", "d": "maybe", "e": 0})
    assert [t.flag(k, True) for k in "abcde"] == [False, False, True, True, False]
    assert t.flag("absent", True) is True and t.flag("absent", False) is False
    assert t.flag("d", False) is False


def test_every_option_an_adapter_reads_is_a_known_one():
    """``config.load`` refuses options not in KNOWN_OPTIONS: each option the code reads must be listed
    for the target types that read it, or users could not set it."""
    import re
    from pathlib import Path

    from registry.config import KNOWN_OPTIONS

    root = Path(__file__).resolve().parents[2] / "registry"
    reads = re.compile(r"""(?:options\.get\(|\.flag\()\s*["'](\w+)["']""")
    files = {"postgresql": ["targets/postgres.py", "apply/group.py"], "timescale": ["targets/timescale.py"],
             "neo4j": ["targets/neo4j.py", "targets/lease.py"], "redis": ["targets/redis.py", "targets/lease.py"]}
    for kind, rels in files.items():
        found = {m for rel in rels for m in reads.findall((root / rel).read_text())}
        assert found and found <= KNOWN_OPTIONS[kind], (kind, found - KNOWN_OPTIONS[kind])
    assert KNOWN_OPTIONS["postgresql"] <= KNOWN_OPTIONS["timescale"]  # the TimescaleDB adapter is a PostgreSQL one
