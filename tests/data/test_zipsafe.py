"""Uploaded zips: hostile names, links, bombs and floods never escape or fill the disk."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from studio.data.zipsafe import UnsafeArchive, extract_photos_from_zip, extract_zip


def jpeg_bytes(colour: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (80, 80), colour).save(out, "JPEG")
    return out.getvalue()


def make_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]],
             compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_normal_zip_with_folders_and_captions(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "dog.zip", [
        ("dog photos/", b""),
        ("dog photos/IMG 1.JPG", jpeg_bytes()),
        ("dog photos/IMG 1.txt", b"sks dog on grass"),
        ("dog photos/IMG_2.jpeg", jpeg_bytes("blue")),
        ("__MACOSX/dog photos/._IMG 1.JPG", b"\x00\x05\x16\x07junk"),
        ("dog photos/.DS_Store", b"Bud1junk"),
        ("dog photos/notes.docx", b"PK\x03\x04"),
    ])
    dest = tmp_path / "out"
    result = extract_zip(archive, dest)
    assert sorted(p.name for p in result.paths) == ["IMG-1.jpg", "IMG-1.txt", "IMG_2.jpeg"]
    assert files_under(dest) == {"IMG-1.jpg", "IMG-1.txt", "IMG_2.jpeg"}
    assert (dest / "IMG-1.jpg").read_bytes() == jpeg_bytes()
    assert result.skipped == [("dog photos/notes.docx", "not a photo")]


def test_traversal_and_absolute_names_stay_inside(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "evil.zip", [
        ("../../escaped.jpg", jpeg_bytes()),
        ("/etc/absolute.jpg", jpeg_bytes()),
        ("..\\..\\windows.jpg", jpeg_bytes()),
        ("C:/Users/x/drive.jpg", jpeg_bytes()),
    ])
    dest = tmp_path / "deep" / "out"
    paths = extract_photos_from_zip(archive, dest)
    assert files_under(dest) == {"escaped.jpg", "absolute.jpg", "windows.jpg", "drive.jpg"}
    assert all(p.parent == dest.resolve() for p in paths)
    assert files_under(tmp_path) == {"evil.zip", "deep", "deep/out"} | {f"deep/out/{n}" for n in files_under(dest)}


def test_symlink_members_skipped(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("passwd.jpg")
    link.create_system = 3  # unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = make_zip(tmp_path / "link.zip", [(link, b"/etc/passwd"), ("real.jpg", jpeg_bytes())])
    dest = tmp_path / "out"
    result = extract_zip(archive, dest)
    assert [p.name for p in result.paths] == ["real.jpg"]
    assert result.skipped == [("passwd.jpg", "symbolic link or special file")]
    assert not any(p.is_symlink() for p in dest.iterdir())


def test_clashing_names_deduplicated_and_existing_files_kept(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "a.jpg").write_bytes(b"already here")
    archive = make_zip(tmp_path / "clash.zip", [
        ("x/a.jpg", jpeg_bytes("red")), ("x/a.txt", b"caption x"),
        ("y/a.jpg", jpeg_bytes("blue")), ("y/a.txt", b"caption y"),
        ("z/A.JPG", jpeg_bytes("green")),
    ])
    paths = extract_photos_from_zip(archive, dest)
    assert (dest / "a.jpg").read_bytes() == b"already here"  # never overwritten
    assert len({p.name.lower() for p in paths}) == 5
    by_name = {p.name: p for p in paths}
    # A photo and its caption from the same folder keep matching stems.
    for stem in {Path(n).stem for n in by_name}:
        if f"{stem}.txt" in by_name:
            caption = by_name[f"{stem}.txt"].read_text()
            colour = Image.open(by_name[f"{stem}.jpg"]).getpixel((40, 40))
            assert (caption == "caption x") == (colour[0] > 200)


def test_zip_bomb_refused_by_ratio(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bomb.zip", [("bomb.bmp", b"\x00" * 20_000_000), ("ok.jpg", jpeg_bytes())])
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchive, match="zip bomb"):
        extract_photos_from_zip(archive, dest)
    assert not dest.exists() or files_under(dest) == set()


def test_total_size_limit_uses_declared_sizes(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "big.zip", [(f"p{i}.jpg", jpeg_bytes()) for i in range(5)], zipfile.ZIP_STORED)
    with pytest.raises(UnsafeArchive, match="unpacks to"):
        extract_photos_from_zip(archive, tmp_path / "out", max_total_bytes=len(jpeg_bytes()) * 4)


def test_lying_size_header_caught_while_extracting(tmp_path: Path) -> None:
    """A member that declares a small size but holds more: the byte count stops it."""
    archive_path = make_zip(tmp_path / "liar.zip", [("a.jpg", jpeg_bytes()), ("b.jpg", b"\xff" * 5000)], zipfile.ZIP_STORED)
    data = bytearray(archive_path.read_bytes())
    with zipfile.ZipFile(archive_path) as archive:
        info = archive.getinfo("b.jpg")
    # Patch the declared uncompressed size in the central directory to 100 bytes.
    central = data.rfind(b"PK\x01\x02")
    assert data[central + 46:central + 51] == b"b.jpg"
    data[central + 24:central + 28] = (100).to_bytes(4, "little")
    assert info.file_size == 5000
    archive_path.write_bytes(bytes(data))
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchive):
        extract_photos_from_zip(archive_path, dest)
    assert files_under(dest) == set()  # the good member written first was cleaned up too


def test_too_many_files_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "many.zip", [(f"p{i}.jpg", b"x") for i in range(12)])
    with pytest.raises(UnsafeArchive, match="12 files; at most 10"):
        extract_photos_from_zip(archive, tmp_path / "out", max_files=10)


def test_not_a_zip(tmp_path: Path) -> None:
    fake = tmp_path / "photos.zip"
    fake.write_bytes(jpeg_bytes())
    with pytest.raises(UnsafeArchive, match="not a readable zip"):
        extract_photos_from_zip(fake, tmp_path / "out")
