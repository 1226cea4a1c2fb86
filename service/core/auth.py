"""Bearer tokens: only their sha256 is stored (in a file or ``BCKD_TOKENS``), never the token.

    python -m service.core.auth add alice --file .bckd/tokens     # prints alice's token, once

A tokens line is ``<sha256-hex> <name> <role>``; role is ``admin`` or ``user``. Jobs belong to
the token's name; a user token sees and cancels only its own jobs, an admin token all of them.
A name is a plain path component (it names the owner's directory): :func:`check_owner_name` is
the one rule, applied by ``add`` before it writes a line and by the loader to every line it
reads. The loader skips a line it refuses, with a logged error naming it, so one bad line
locks out only its own token, not every request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from service.core.schemas import NAME_PATTERN

__all__ = ["Principal", "TokenTable", "add_token", "check_owner_name", "hash_token",
           "new_token", "parse_token_line", "write_admin_token"]

log = logging.getLogger("bckd.service")
OWNER_NAME = re.compile(NAME_PATTERN)  # a plain path component
OWNER_RULE = ("letters, digits, '_', '-' or '.', starting with a letter or digit, at most 64 "
              "characters (it names the owner's directory)")
HASH = re.compile(r"[0-9a-fA-F]{64}")
ROLES = ("admin", "user")


@dataclass(frozen=True)
class Principal:
    name: str
    admin: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def check_owner_name(name: str) -> str:
    """``name`` if it may own jobs; ``ValueError`` naming the allowed form otherwise."""
    if not OWNER_NAME.fullmatch(name):
        raise ValueError(f"name {name!r} is not allowed: use {OWNER_RULE}")
    return name


def parse_token_line(line: str) -> tuple[str, Principal] | None:
    """``(sha256 hex, principal)`` of one tokens line; None for a blank or ``#`` line;
    ``ValueError`` saying what is wrong with any other."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    parts = line.split()
    if len(parts) != 3 or parts[2] not in ROLES or not HASH.fullmatch(parts[0]):
        raise ValueError("expected '<sha256-hex> <name> admin|user'")
    return parts[0].lower(), Principal(check_owner_name(parts[1]), parts[2] == "admin")


class TokenTable:
    def __init__(self, lines: list[str], source: str = "tokens line"):
        self._by_hash: dict[str, Principal] = {}
        self._add(lines, source)

    def _add(self, lines: list[str], source: str) -> None:
        for n, line in enumerate(lines, 1):
            try:
                entry = parse_token_line(line)
            except ValueError as err:
                # refused, not raised: a raise here would answer every request with a 500
                log.error("%s %d skipped (its token is refused): %s", source, n, err)
                continue
            if entry is not None:
                self._by_hash[entry[0]] = entry[1]

    @classmethod
    def load(cls, file: Path | None, env: str) -> TokenTable:
        lines = file.read_text().splitlines() if file is not None and file.exists() else []
        table = cls(lines, f"tokens file {file}, line")
        table._add(env.split(";"), "BCKD_TOKENS, entry")
        return table

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, token: str) -> Principal | None:
        digest = hash_token(token)
        for known, principal in self._by_hash.items():  # constant-time compare per entry
            if hmac.compare_digest(known, digest):
                return principal
        return None


def write_admin_token(data_dir: Path, tokens_file: Path) -> Path:
    """Create ``data_dir/admin_token`` (0600) once and register its hash in ``tokens_file``."""
    token_path = data_dir / "admin_token"
    if not token_path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        token = new_token()
        token_path.touch(mode=0o600)
        token_path.write_text(token + "\n")
    token = token_path.read_text().strip()
    line = f"{hash_token(token)} admin admin"
    existing = tokens_file.read_text().splitlines() if tokens_file.exists() else []
    if line not in existing:
        tokens_file.write_text("\n".join([*existing, line]) + "\n")
    return token_path


def add_token(tokens_file: Path, name: str, admin: bool = False) -> str:
    """Register a new token for ``name``; returns the token (only its hash is stored).
    ``ValueError`` for a name the loader would refuse (:func:`check_owner_name`)."""
    check_owner_name(name)
    token = new_token()
    tokens_file.parent.mkdir(parents=True, exist_ok=True)
    with tokens_file.open("a") as fh:
        fh.write(f"{hash_token(token)} {name} {'admin' if admin else 'user'}\n")
    return token


def _main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m service.core.auth", description="API tokens")
    sub = p.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="create a token, store its hash, print it once")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="sees and cancels all jobs")
    add.add_argument("--file", type=Path, default=Path(".bckd/tokens"))
    args = p.parse_args(argv)
    try:
        print(add_token(args.file, args.name, args.admin))
    except ValueError as err:  # nothing written: e.g. python -m service.core.auth add alice
        p.error(f"{err}; e.g. python -m service.core.auth add alice --file {args.file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
