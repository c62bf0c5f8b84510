"""Target options read as booleans (registry.config.Target.flag)."""

from __future__ import annotations


def test_target_flags_read_toml_booleans_and_yes_no_words():
    from registry.config import Target

    t = Target("main", "postgresql", "dev", "test", {"a": False, "b": "off", "c": "Yes", "d": "maybe", "e": 0})
    assert [t.flag(k, True) for k in "abcde"] == [False, False, True, True, False]
    assert t.flag("absent", True) is True and t.flag("absent", False) is False
    assert t.flag("d", False) is False
