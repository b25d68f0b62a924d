"""The shape of the package: imports point down, tasks stay apart and small.

Read from the source with ``ast`` (nothing is imported): every import statement counts,
including those inside functions.

- No module under ``hepml/tasks/`` has more than :data:`MAX_LINES` lines.
- A task never imports another task: a module of job A imports, of the tasks layer, only
  the modules shared by every job (:data:`SHARED`) and modules of A's own package; the
  shared modules import no job.
- The layers below the tasks (evaluation, training, models, representations, io) and
  the simulation never import ``hepml.tasks`` or ``hepml.cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEPML = ROOT / "hepml"
TASKS = HEPML / "tasks"
MAX_LINES = 600
#: Modules of the tasks layer that are no job; every job may import them.
SHARED = {"_job", "_entries", "rundir", "scoring", "workflow"}
#: Layers that know nothing of the tasks and the CLI.
BELOW = ("evaluation", "training", "models", "representations", "io", "simulation")


def _module(path: Path) -> str:
    """Dotted name of the module at ``path``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module (or module attribute) that ``source`` imports.

    ``from a.b import c`` gives ``a.b`` and ``a.b.c`` (``c`` may be a module); relative
    imports are resolved against ``module``.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base += [node.module] if node.module else []
                origin = ".".join(base)
            else:
                origin = node.module or ""
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return found


def _imports_of(path: Path) -> set[str]:
    return _imports(path.read_text(), _module(path), is_package=path.name == "__init__.py")


def _job(path: Path) -> str | None:
    """The job (or shared module) a file under ``hepml/tasks`` belongs to."""
    parts = path.relative_to(TASKS).with_suffix("").parts
    return None if parts == ("__init__",) else parts[0]


def _task_modules() -> list[Path]:
    return sorted(TASKS.rglob("*.py"))


def test_the_import_reader_sees_every_kind_of_import() -> None:
    source = """
import hepml.io
from hepml.tasks import scoring
from hepml.tasks.tagging.task import run
from . import data
from .scores import score_data
from .. import rundir

def late():
    from hepml.cli import main
"""
    found = _imports(source, "hepml.tasks.anomaly.task")
    assert {"hepml.io", "hepml.tasks.scoring", "hepml.tasks.tagging.task",
            "hepml.tasks.anomaly.data", "hepml.tasks.anomaly.scores", "hepml.tasks.rundir",
            "hepml.cli"} <= found
    assert "hepml.tasks._entries" in _imports_of(TASKS / "anomaly" / "task.py")


def test_no_task_module_is_longer_than_the_limit() -> None:
    modules = _task_modules()
    assert len(modules) > 10
    long = {str(p.relative_to(ROOT)): n for p in modules
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


def test_a_task_never_imports_another_task() -> None:
    bad = []
    for path in _task_modules():
        job = _job(path)
        if job is None:
            continue
        allowed = SHARED if job in SHARED else SHARED | {job}
        others = {name.split(".")[2] for name in _imports_of(path)
                  if name.startswith("hepml.tasks.")} - allowed
        bad += [f"{path.relative_to(ROOT)} imports hepml.tasks.{o}" for o in sorted(others)]
    assert not bad, "a task imports another task:\n" + "\n".join(bad)


def test_the_layers_below_never_import_tasks_or_the_cli() -> None:
    bad = []
    for layer in BELOW:
        files = sorted((HEPML / layer).rglob("*.py"))
        assert files, layer
        for path in files:
            above = {".".join(name.split(".")[:2]) for name in _imports_of(path)}
            bad += [f"{path.relative_to(ROOT)} imports {name}"
                    for name in sorted(above & {"hepml.tasks", "hepml.cli"})]
    assert not bad, "imports must point down:\n" + "\n".join(bad)
