#!/usr/bin/env bash
# Write docker/env/*.env from the committed *.env.example files, with fresh random secrets.
#
#   docker/make-env.sh            # docker/env/*.env (existing files are kept)
#   docker/make-env.sh OUT_DIR    # somewhere else (tests)
#
# Each placeholder CHANGE_ME_<NAME> gets one random value, the same in every file (the password
# in BCKD_DATABASE_URL is POSTGRES_PASSWORD, and so on). CHANGE_ME_ADMIN_TOKEN_SHA256 becomes the
# sha256 of a new API admin token, written to OUT_DIR/admin_token (mode 0600) for `bckd jobs`.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/env}
mkdir -p "$OUT"
umask 077
python3 - "$HERE/env" "$OUT" <<'PY'
import hashlib
import re
import secrets
import sys
from pathlib import Path

src, out = Path(sys.argv[1]), Path(sys.argv[2])
values: dict[str, str] = {}
admin = secrets.token_urlsafe(32)
token_file = out / "admin_token"
if token_file.exists():
    admin = token_file.read_text().strip()


def value(m: re.Match) -> str:
    name = m.group(0)
    if name == "CHANGE_ME_ADMIN_TOKEN_SHA256":
        return hashlib.sha256(admin.encode()).hexdigest()
    return values.setdefault(name, secrets.token_hex(24))


wrote = False
for example in sorted(src.glob("*.env.example")):
    target = out / example.name.removesuffix(".example")
    if target.exists():
        print(f"make-env: keeping {target}")
        continue
    target.write_text(re.sub(r"CHANGE_ME_[A-Z0-9_]+", value, example.read_text()))
    print(f"make-env: wrote {target}")
    wrote = True
if wrote or not token_file.exists():
    token_file.write_text(admin + "\n")
    print(f"make-env: API admin token in {token_file}")
PY
