"""Bearer tokens: only their sha256 is stored (in a file or ``BCKD_TOKENS``), never the token.

    python -m service.auth add alice --file .bckd/tokens     # prints alice's token, once

A tokens line is ``<sha256-hex> <name> <role>``; role is ``admin`` or ``user``. Jobs belong to
the token's name; a user token sees and cancels only its own jobs, an admin token all of them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Principal", "TokenTable", "add_token", "hash_token", "new_token",
           "write_admin_token"]


OWNER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a plain path component


@dataclass(frozen=True)
class Principal:
    name: str
    admin: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class TokenTable:
    def __init__(self, lines: list[str]):
        self._by_hash: dict[str, Principal] = {}
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 3 or parts[2] not in ("admin", "user") or len(parts[0]) != 64:
                raise ValueError(f"tokens line {n}: expected '<sha256-hex> <name> admin|user'")
            if not OWNER_NAME.match(parts[1]):
                raise ValueError(f"tokens line {n}: name {parts[1]!r} must be letters, digits, "
                                 "'_', '-' or '.', starting with a letter or digit (it names "
                                 "the owner's directory)")
            self._by_hash[parts[0].lower()] = Principal(parts[1], parts[2] == "admin")

    @classmethod
    def load(cls, file: Path | None, env: str) -> TokenTable:
        lines = file.read_text().splitlines() if file is not None and file.exists() else []
        return cls(lines + env.split(";"))

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
    """Register a new token for ``name``; returns the token (only its hash is stored)."""
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"token name {name!r}: one word, no spaces")
    token = new_token()
    tokens_file.parent.mkdir(parents=True, exist_ok=True)
    with tokens_file.open("a") as fh:
        fh.write(f"{hash_token(token)} {name} {'admin' if admin else 'user'}\n")
    return token


def _main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m service.auth", description="API tokens")
    sub = p.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="create a token, store its hash, print it once")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="sees and cancels all jobs")
    add.add_argument("--file", type=Path, default=Path(".bckd/tokens"))
    args = p.parse_args(argv)
    print(add_token(args.file, args.name, args.admin))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
