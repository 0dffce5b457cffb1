"""Path handling for user-supplied names on a shared machine.

Every folder or file name that comes from a user (a project name, an uploaded
file name, a zip member) goes through `safe_name` or `safe_join` so that one
user can never read or overwrite another user's files, or anything outside the
workspace.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

__all__ = ["UnsafePath", "safe_join", "safe_name"]

# Windows refuses these as file names whatever the extension; a Space may be
# downloaded and opened on Windows, so avoid them everywhere.
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
_DRIVE_PREFIX = re.compile(r"^[A-Za-z]:")


class UnsafePath(ValueError):
    """A user-supplied path that would escape its root, or is not a usable name."""


def safe_join(root: Path, *parts: str) -> Path:
    """Join `parts` under `root`, refusing anything that could land outside it.

    Refused: no parts, empty parts, NUL bytes, absolute parts (POSIX, `\\`-rooted
    or `C:`-style), any `..` segment, and paths whose symlinks resolve outside
    root. Backslashes count as separators too, so a Windows-style `..\\x`
    cannot slip through. Returns the resolved path (symlinks followed).
    """
    if not parts:
        raise UnsafePath("no file name given")
    segments: list[str] = []
    for part in parts:
        if not isinstance(part, str) or part.strip() == "":
            raise UnsafePath(f"empty path part {part!r}")
        if "\x00" in part:
            raise UnsafePath("path contains a NUL byte")
        if part.startswith(("/", "\\")) or _DRIVE_PREFIX.match(part):
            raise UnsafePath(f"absolute path not allowed: {part!r}")
        for segment in re.split(r"[\\/]", part):
            if segment == "..":
                raise UnsafePath(f"'..' not allowed in {part!r}")
            if segment not in ("", "."):
                segments.append(segment)
    if not segments:
        raise UnsafePath(f"path {'/'.join(parts)!r} names no file")
    try:
        real_root = Path(root).resolve()
        candidate = real_root.joinpath(*segments).resolve()
    except (OSError, UnicodeError, ValueError) as exc:  # e.g. names too long, lone surrogates
        raise UnsafePath(f"unusable path: {exc}") from exc
    # resolve() follows symlinks, so a link pointing outside root is caught here.
    if candidate == real_root or not candidate.is_relative_to(real_root):
        raise UnsafePath(f"path {'/'.join(parts)!r} escapes its folder")
    return candidate


def safe_name(text: str, *, max_length: int = 64, fallback: str = "untitled") -> str:
    """A filename-safe slug of a user-supplied name ("Rex the Dog!" -> "Rex-the-Dog").

    ASCII letters, digits, `.`, `_` and `-` only; never starts with a dot (no
    hidden files) or a dash (no command-line options); never a Windows device
    name; never empty.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    ascii_text = re.sub(r"['`]", "", ascii_text)  # "Zoe's" -> "Zoes", not "Zoe-s"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text)
    slug = re.sub(r"-{2,}", "-", slug).strip("-._ ")[:max_length].strip("-._ ")
    if not slug:
        return fallback
    if slug.split(".")[0].lower() in _WINDOWS_RESERVED:
        slug = f"_{slug}"[:max_length]
    return slug
