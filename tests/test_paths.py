"""safe_join / safe_name: user-supplied names never reach outside their folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio.paths import UnsafePath, safe_join, safe_name


def test_plain_names_join_inside(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "alice", "runs", "rex.png") == tmp_path.resolve() / "alice" / "runs" / "rex.png"
    assert safe_join(tmp_path, "alice/./runs") == tmp_path.resolve() / "alice" / "runs"


@pytest.mark.parametrize("parts", [
    (), ("",), ("   ",), ("..",), ("alice", "../bob"), ("a/../../etc",), ("/etc/passwd",),
    ("\\server\\share",), ("..\\..\\x",), ("C:\\Windows",), ("c:evil",), ("a\x00b",), (".",), ("./.",),
])
def test_escapes_and_empties_refused(tmp_path: Path, parts: tuple[str, ...]) -> None:
    with pytest.raises(UnsafePath):
        safe_join(tmp_path, *parts)


def test_symlink_pointing_outside_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "sneaky").symlink_to(outside)
    (root / "fine").symlink_to(root / "real")
    with pytest.raises(UnsafePath, match="escapes"):
        safe_join(root, "sneaky", "secret.txt")
    assert safe_join(root, "fine", "x") == (root / "real" / "x").resolve()


PART = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["..", ".", "/", "\\", "a/../..", "../x", "C:", "~", "\x00", "x/" * 5, "..."]),
    st.text(alphabet="./\\a", max_size=12),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(PART, max_size=5))
def test_property_result_inside_root_or_refused(tmp_path: Path, parts: list[str]) -> None:
    root = tmp_path.resolve()
    try:
        result = safe_join(root, *parts)
    except UnsafePath:
        return
    assert result.is_relative_to(root) and result != root
    assert os.path.commonpath([root, os.path.realpath(result)]) == str(root)


@pytest.mark.parametrize("text, expected", [
    ("Rex the Dog!", "Rex-the-Dog"),
    ("../../etc/passwd", "etc-passwd"),
    (".hidden", "hidden"),
    ("--rm -rf", "rm-rf"),
    ("Zoë's café", "Zoes-cafe"),
    ("CON", "_CON"),
    ("nul.txt", "_nul.txt"),
    ("🐶🐶", "untitled"),
    ("", "untitled"),
])
def test_safe_name(text: str, expected: str) -> None:
    assert safe_name(text) == expected


@given(st.text())
def test_safe_name_is_always_a_plain_file_name(text: str) -> None:
    name = safe_name(text)
    assert 0 < len(name) <= 64 and "/" not in name and "\\" not in name and name not in (".", "..")
    assert not name.startswith((".", "-")) and name.isascii()
