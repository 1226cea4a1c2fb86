"""Layers only look down: ``bckd`` (library) <- ``jobs`` (Ray entrypoints) <- ``service`` (API),
with the ``bckd`` command's dispatcher (``cli``) above all three. Checked by reading every
import statement, lazy ones inside functions included."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICE_DEPS = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "pydantic_settings",
                "httpx"}
# package -> top-level names its modules may not import
FORBIDDEN = {
    "bckd": {"jobs", "service", "cli", *SERVICE_DEPS},
    "jobs": {"service", "cli", *SERVICE_DEPS},
    "service": {"cli"},
}


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_layer_above_it(package):
    found = {str(p.relative_to(ROOT)): sorted(imported_names(p) & FORBIDDEN[package])
             for p in sorted((ROOT / package).rglob("*.py"))}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_library_and_a_job_entrypoint_load_without_the_service():
    # jobs.train's --help builds its whole parser; nothing of the service may come with it
    above = sorted(SERVICE_DEPS | {"service", "cli"})
    code = ("import sys, runpy; sys.argv = ['jobs.train', '--help']\n"
            "try:\n    runpy.run_module('jobs.train', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "import bckd.runtime.launch, bckd.config.policy, bckd.evaluation.stats\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {above!r})\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "--spec FILE" in r.stdout


def test_bckd_help_lists_every_command_and_each_summary_is_its_modules():
    from cli import COMMANDS, build_parser

    def summaries(parser) -> dict[str, str]:
        sub = next(a for a in parser._actions if a.dest == "command")
        return {c.dest: c.help for c in sub._choices_actions}

    listed = summaries(build_parser())
    assert listed == {name: summary for name, (_, summary) in COMMANDS.items()}
    for name in COMMANDS:  # the module's own help line is the one `bckd --help` shows
        assert summaries(build_parser(name))[name] == listed[name]
