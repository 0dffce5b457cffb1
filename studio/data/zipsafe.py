"""Extracting an uploaded zip of photos without trusting anything in it.

Member names are reduced to a sanitised basename (no folders, no `..`, no
absolute paths), symlinks and special files are skipped, and size limits are
enforced both on the declared sizes and on the bytes actually written, so a
zip bomb or a lying header can't fill the disk. Files land only in dest_dir.
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from studio.paths import UnsafePath, safe_join, safe_name

__all__ = ["UnsafeArchive", "ZipExtraction", "extract_zip", "extract_photos_from_zip", "PHOTO_SUFFIXES"]

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif"}
KEPT_SUFFIXES = PHOTO_SUFFIXES | {".txt"}  # .txt: captions beside photos
JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
CHUNK = 1 << 16


class UnsafeArchive(ValueError):
    """The whole zip is refused (bomb, too many files, not a zip)."""


@dataclass
class ZipExtraction:
    paths: list[Path] = field(default_factory=list)  # written files, in archive order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (member name, why), for the UI


def extract_photos_from_zip(
    zip_path: Path, dest_dir: Path, *, max_files: int = 100,
    max_total_bytes: int = 200 * 1024 * 1024, max_ratio: float = 100.0,
) -> list[Path]:
    """Extract photo (and caption .txt) members into dest_dir; returns the written paths."""
    return extract_zip(zip_path, dest_dir, max_files=max_files, max_total_bytes=max_total_bytes,
                       max_ratio=max_ratio).paths


def extract_zip(
    zip_path: Path, dest_dir: Path, *, max_files: int = 100,
    max_total_bytes: int = 200 * 1024 * 1024, max_ratio: float = 100.0,
) -> ZipExtraction:
    """Like extract_photos_from_zip, also saying which members were skipped and why."""
    result = ZipExtraction()
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnsafeArchive(f"{Path(zip_path).name} is not a readable zip file") from exc
    with archive:
        members = _select_members(archive.infolist(), result)
        _check_declared_sizes(members, max_files, max_total_bytes, max_ratio)
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        names = _assign_names(members, dest_dir)
        written = 0
        try:
            for info in members:
                target = safe_join(dest_dir, names[id(info)])
                written += _copy_member(archive, info, target, max_total_bytes - written)
                result.paths.append(target)
        except (UnsafeArchive, UnsafePath, zipfile.BadZipFile, OSError, RuntimeError, EOFError) as exc:
            for path in result.paths:  # all or nothing: no half-extracted bomb left behind
                path.unlink(missing_ok=True)
            if isinstance(exc, UnsafeArchive):
                raise
            raise UnsafeArchive(f"could not extract {Path(zip_path).name}: {exc}") from exc
    return result


def _select_members(infos: list[zipfile.ZipInfo], result: ZipExtraction) -> list[zipfile.ZipInfo]:
    kept = []
    for info in infos:
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        base = parts[-1] if parts else ""
        kind = stat.S_IFMT(info.external_attr >> 16)  # unix mode lives in the high 16 bits
        if info.is_dir() or not base:
            continue
        if "__MACOSX" in parts or base.startswith(".") or base.lower() in JUNK_NAMES:
            continue  # macOS resource forks, Finder/Explorer metadata
        if kind not in (0, stat.S_IFREG):
            result.skipped.append((info.filename, "symbolic link or special file"))
        elif info.flag_bits & 0x1:
            result.skipped.append((info.filename, "password-protected"))
        elif PurePosixPath(base).suffix.lower() not in KEPT_SUFFIXES:
            result.skipped.append((info.filename, "not a photo"))
        else:
            kept.append(info)
    return kept


def _check_declared_sizes(members: list[zipfile.ZipInfo], max_files: int, max_total: int, max_ratio: float) -> None:
    if len(members) > max_files:
        raise UnsafeArchive(f"the zip holds {len(members)} files; at most {max_files} are accepted")
    total = sum(info.file_size for info in members)
    if total > max_total:
        raise UnsafeArchive(f"the zip unpacks to {total / 2**20:.0f} MB; at most {max_total / 2**20:.0f} MB is accepted")
    for info in members:
        if info.file_size / max(info.compress_size, 1) > max_ratio:
            raise UnsafeArchive(f"{info.filename} compresses suspiciously well (a zip bomb?); upload the photos directly")


def _assign_names(members: list[zipfile.ZipInfo], dest_dir: Path) -> dict[int, str]:
    """Flatten to sanitised basenames; photo and caption from one folder keep a shared stem."""
    taken = {p.name.lower() for p in dest_dir.iterdir()}
    stem_for: dict[tuple[str, str], str] = {}
    names: dict[int, str] = {}
    for info in members:
        path = PurePosixPath(info.filename.replace("\\", "/"))
        key = (str(path.parent), path.stem.lower())
        suffix = path.suffix.lower()
        if key not in stem_for:
            stem, n = safe_name(path.stem, fallback="photo"), 1
            candidate = stem
            while any(f"{candidate}{s}".lower() in taken for s in KEPT_SUFFIXES):
                n += 1
                candidate = f"{stem}-{n}"
            stem_for[key] = candidate
        name = f"{stem_for[key]}{suffix}"
        taken.add(name.lower())
        names[id(info)] = name
    return names


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int) -> int:
    """Stream one member, counting real bytes: declared sizes can lie."""
    limit = min(budget, info.file_size)
    copied = 0
    try:
        with archive.open(info) as source, target.open("xb") as sink:  # "x": never overwrite or follow a link
            while chunk := source.read(CHUNK):
                copied += len(chunk)
                if copied > limit:
                    raise UnsafeArchive(f"{info.filename} is larger than it claims; the zip was refused")
                sink.write(chunk)
    except BaseException:
        # A bad CRC or a lie about sizes surfaces mid-copy: leave no partial file.
        if target.exists() and not target.is_symlink():
            target.unlink()
        raise
    return copied
