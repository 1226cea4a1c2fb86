"""Layers only look down: ``bckd`` (library) <- ``jobs`` (Ray entrypoints) <- ``service`` (API),
with the ``bckd`` command's dispatcher (``cli``) above all three; inside ``service``, the routes
are a shell over ``core`` and never reach the ``adapters``, and ``core`` speaks no HTTP. Checked
by reading every import statement, lazy ones inside functions included."""

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


# folder of service/ -> dotted prefixes its modules may not import
SERVICE_ROOMS = {
    "api/routes": ("service.adapters", "service.stack", "service.client"),
    "core": ("fastapi", "starlette", "service.api", "service.stack", "service.client"),
    "adapters": ("fastapi", "starlette", "service.api", "service.stack", "service.client"),
    "stack": ("fastapi", "service.api", "service.client"),
}
MAX_LINES = 300  # a module is read in one sitting


def imported_modules(path: Path) -> set[str]:
    """The dotted names ``path`` imports: ``a.b`` for ``import a.b``, ``a.b`` and ``a.b.c``
    for ``from a.b import c`` (``c`` may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imported_names(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_layer_above_it(package):
    found = {str(p.relative_to(ROOT)): sorted(imported_names(p) & FORBIDDEN[package])
             for p in sorted((ROOT / package).rglob("*.py"))}
    assert {k: v for k, v in found.items() if v} == {}


@pytest.mark.parametrize("room", sorted(SERVICE_ROOMS))
def test_each_room_of_the_service_imports_only_what_its_layer_may(room):
    banned = SERVICE_ROOMS[room]
    found = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p)
                                              if m.startswith(banned))
             for p in sorted((ROOT / "service" / room).rglob("*.py"))}
    assert found, f"service/{room} has no modules"
    assert {k: v for k, v in found.items() if v} == {}


def test_the_checks_see_a_forbidden_import(tmp_path):
    # the checks above pass on an empty list too: they must find what they forbid
    route = tmp_path / "route.py"
    route.write_text("def f():\n    from service.adapters.db import Job\n")
    assert "service.adapters.db" in imported_modules(route)
    assert imported_names(route) == {"service"}


def test_no_module_is_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for package in ("bckd", "jobs", "service")
            for p in sorted((ROOT / package).rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


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
