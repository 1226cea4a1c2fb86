"""Unpacking an uploaded data set (``service.core.uploads.unpack``): what a hostile archive tries is
refused before a file is written, and a set tarred with its directory unpacks to that
directory. The REST route around it: tests/service/test_datasets.py."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from service.core.errors import Invalid
from service.core.uploads import unpack


def archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
            mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_a_set_tarred_with_its_directory_unpacks_to_that_directory(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    tar = archive(tmp_path / "a.tgz", [file("myset/annotations/instances_val.json", b"{}"),
                                       file("myset/val/0.png", b"png")])
    root = unpack(tar, dest, max_bytes=1000)
    assert root == dest / "myset"
    assert (root / "annotations/instances_val.json").read_bytes() == b"{}"


def test_a_set_at_the_archives_top_is_its_root(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    tar = archive(tmp_path / "a.tar", [file("annotations/instances_val.json", b"{}")], "w")
    assert unpack(tar, dest, max_bytes=1000) == dest


@pytest.mark.parametrize(("member", "says"), [
    (file("/etc/evil"), "an absolute path"),
    (file("set/../../evil"), "'..'"),
    (special("set/link", tarfile.SYMTYPE, "/etc/passwd"), "a link"),
    (special("set/hard", tarfile.LNKTYPE, "set/a"), "a link"),
    (special("set/fifo", tarfile.FIFOTYPE), "special file"),
])
def test_a_hostile_member_refuses_the_whole_archive(tmp_path, member, says):
    dest = tmp_path / "dest"
    dest.mkdir()
    tar = archive(tmp_path / "a.tgz", [file("set/a"), member])
    with pytest.raises(Invalid) as err:
        unpack(tar, dest, max_bytes=1000)
    assert err.value.field == "archive" and says in err.value.msg, err.value.msg
    assert list(dest.iterdir()) == [] and not (tmp_path / "evil").exists()


def test_what_unpacks_past_the_cap_is_refused_before_it_is_written(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    tar = archive(tmp_path / "bomb.tgz", [file("set/a", bytes(600)), file("set/b", bytes(600))])
    assert tar.stat().st_size < 1000  # compressed, it is under the cap
    with pytest.raises(Invalid) as err:
        unpack(tar, dest, max_bytes=1000)
    assert err.value.status == 413 and "BCKD_MAX_UPLOAD_BYTES" in err.value.msg
    assert list(dest.iterdir()) == []


def test_what_is_no_tar_archive_is_a_422_on_archive(tmp_path):
    (tmp_path / "dest").mkdir()
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(Invalid) as err:
        unpack(junk, tmp_path / "dest", max_bytes=1000)
    assert err.value.field == "archive" and err.value.status == 422
