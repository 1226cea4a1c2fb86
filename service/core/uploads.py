"""A data set uploaded as a tar archive (``POST /v1/datasets/{name}/archive``): received to a
file with a size cap, then unpacked safely into its owner's directory.

Safe means: only regular files and directories; every name relative, without ``..``; no
links, devices or fifos; at most ``max_bytes`` unpacked in all (a gzip bomb stops at the cap,
not at the disk's end) and at most ``MAX_MEMBERS`` entries. Any other member refuses the
whole archive (422 on ``archive``), before one file is written.
"""

from __future__ import annotations

import gzip
import lzma
import tarfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath

from service.core.errors import Invalid

__all__ = ["MAX_MEMBERS", "receive", "unpack"]

MAX_MEMBERS = 500_000  # a COCO set is two annotation files and one file per image


async def receive(chunks: AsyncIterator[bytes], to: Path, max_bytes: int) -> int:
    """Write the request body ``chunks`` to ``to``; 413 on ``archive`` past ``max_bytes``.
    The writes are small and local, so they stay on the event loop."""
    size = 0
    with open(to, "wb") as fh:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise Invalid("archive", f"larger than {max_bytes} bytes "
                              "(BCKD_MAX_UPLOAD_BYTES); split the set or ask an admin", 413)
            fh.write(chunk)
    if size == 0:
        raise Invalid("archive", "empty body; send the set as a tar archive (gzip or not), "
                      "e.g. curl --data-binary @set.tar.gz")
    return size


def _check(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` may not be unpacked, or None."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        return f"{member.name!r}: an absolute path or one with '..'"
    if not (member.isfile() or member.isdir()):
        return f"{member.name!r}: a link or special file (only files and directories)"
    return None


def unpack(archive: Path, dest: Path, max_bytes: int) -> Path:
    """Unpack the tar ``archive`` (any compression tarfile reads) into the empty ``dest``
    and return the set's root: ``dest``, or its one directory when the archive holds a single
    top-level directory (``tar czf set.tgz myset/``). 422 on ``archive`` naming the first
    member refused."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members, total = [], 0
            for member in tar:  # streamed: the listing of a huge archive is never all held
                if (why := _check(member)) is not None:
                    raise Invalid("archive", f"refused: {why}")
                total += member.size
                members.append(member)
                if total > max_bytes or len(members) > MAX_MEMBERS:
                    raise Invalid("archive", f"unpacks to more than {max_bytes} bytes or "
                                  f"{MAX_MEMBERS} entries (BCKD_MAX_UPLOAD_BYTES)", 413)
            # the "data" filter checks again what _check did, and drops modes and owners
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError) as err:
        raise Invalid("archive", f"not a readable tar archive: {err}") from None
    top = list(dest.iterdir())
    if len(top) == 1 and top[0].is_dir() and not (dest / "annotations").exists():
        return top[0]
    return dest
