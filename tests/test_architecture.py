"""The dependency direction of ../shared/DESIGN.md and PROTOCOL.md, read from every module's imports.

- `lowcarb.errors` imports nothing of lowcarb, `lowcarb.files` only `errors`; `measure` only those
  two; `store` only `measure`;
  `data`, `models`, `train` build on `measure` (models reads data bundles, train runs models);
- techniques (`adapt`, `prune`, `compress`, `search`) never import `pipeline` or `cli`;
- `report` reads stored results and trains nothing: no `train.loop`, no `fit`, no technique, no
  runner;
- only `cli/` imports argparse (it is the one place that parses command-line strings);
- no private name (`_x`) is imported from another lowcarb module;
- no module is over 500 lines and no function over 80 (from its `def` line to its last line).

The checks parse the sources (ast), so they run without importing torch. Each rule is also run on
a synthetic tree that breaks it, so a check that cannot fail is caught here too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

TECHNIQUES = {"adapt", "prune", "compress", "search"}
# Packages each lower layer may import (besides itself). Packages not listed are unrestricted
# here; the rules below cover them.
# `errors` and `files` (atomic writes, PathError) import nothing else: everyone may use them.
GROUND = {"errors", "files"}
ALLOWED = {
    "errors": set(),
    "files": {"errors"},
    "measure": GROUND,
    "store": GROUND | {"measure"},
    "data": GROUND | {"measure"},
    "models": GROUND | {"measure", "data"},
    "train": GROUND | {"measure", "data", "models"},
}
# Modules report must not import: they train, or run something that does.
REPORT_FORBIDDEN_MODULES = ("lowcarb.train.loop", "lowcarb.pipeline.runner", "lowcarb.pipeline.search_run")
REPORT_FORBIDDEN_NAMES = {"fit"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. lowcarb.search.hpo
    target: str  # the imported module, e.g. lowcarb.measure.tracker
    names: tuple[str, ...]  # names taken with `from target import ...`
    line: int

    @property
    def package(self) -> str:
        return package_of(self.module)

    @property
    def target_package(self) -> str:
        return package_of(self.target)


def package_of(module: str) -> str:
    """lowcarb.search.hpo -> search; lowcarb.errors -> errors; lowcarb -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(src: Path) -> Iterator[Import]:
    """Every import statement of every module under src/lowcarb (module bodies and functions)."""
    for path in sorted((src / "lowcarb").rglob("*.py")):
        module = module_name(path, src)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, alias.name, (), node.lineno)
            elif isinstance(node, ast.ImportFrom):
                target = resolve(module, path.name == "__init__.py", node)
                names = tuple(a.name for a in node.names)
                yield Import(module, target, names, node.lineno)


def layer_violations(src: Path) -> list[str]:
    out = []
    for imp in imports_of(src):
        if not imp.target.startswith("lowcarb") or imp.target_package in ("", imp.package):
            continue
        allowed = ALLOWED.get(imp.package)
        if allowed is not None and imp.target_package not in allowed:
            out.append(f"{imp.module}:{imp.line} ({imp.package}) imports {imp.target}")
        if imp.package in TECHNIQUES and imp.target_package in ("pipeline", "cli"):
            out.append(f"{imp.module}:{imp.line}: a technique imports {imp.target}")
    return out


def report_violations(src: Path) -> list[str]:
    out = []
    for imp in imports_of(src):
        if imp.package != "report":
            continue
        if imp.target_package in TECHNIQUES or imp.target.startswith(REPORT_FORBIDDEN_MODULES):
            out.append(f"{imp.module}:{imp.line}: report imports {imp.target} (report trains nothing)")
        trained = REPORT_FORBIDDEN_NAMES & set(imp.names)
        if imp.target.startswith("lowcarb") and trained:
            out.append(f"{imp.module}:{imp.line}: report imports {sorted(trained)} from {imp.target}")
    return out


def argparse_violations(src: Path) -> list[str]:
    return [
        f"{imp.module}:{imp.line} imports argparse (only lowcarb.cli parses command lines)"
        for imp in imports_of(src)
        if imp.target.split(".")[0] == "argparse" and imp.package != "cli"
    ]


def private_name_violations(src: Path) -> list[str]:
    out = []
    for imp in imports_of(src):
        if not imp.target.startswith("lowcarb") or imp.target == imp.module:
            continue
        private = [n for n in imp.names if n.startswith("_") and not n.startswith("__")]
        parts = imp.target.split(".")
        for depth, part in enumerate(parts):
            # A private module (`stages/_compressed.py`) is shared within its own package.
            home = ".".join(parts[:depth]) + "."
            if part.startswith("_") and not part.startswith("__") and not imp.module.startswith(home):
                private.append(part)
        if private:
            out.append(f"{imp.module}:{imp.line} imports private {private} from {imp.target}")
    return out


MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def size_violations(src: Path) -> list[str]:
    out = []
    for path in sorted(src.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = module_name(path, src)
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            out.append(f"{name} has {lines} lines (at most {MAX_MODULE_LINES}): split it by what it does")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    out.append(f"{name}:{node.lineno} {node.name}() has {length} lines "
                               f"(at most {MAX_FUNCTION_LINES})")
    return out


RULES = {
    "layers": layer_violations,
    "size": size_violations,
    "report": report_violations,
    "argparse": argparse_violations,
    "private": private_name_violations,
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_the_source_tree_follows_the_rule(rule):
    assert RULES[rule](SRC) == []


def test_every_module_is_read():
    modules = {imp.module for imp in imports_of(SRC)}
    # A sample from each layer: if the walk missed a folder, these would be absent.
    for name in ("lowcarb.measure.tracker", "lowcarb.store.runstore", "lowcarb.cli", "lowcarb.report.search"):
        assert name in modules


# --- every rule fails on a tree that breaks it ---------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / "lowcarb" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


BROKEN = {
    "layers": {
        "measure/meter.py": "from lowcarb.pipeline.runner import run_recipe\n",
        "store/runstore.py": "import lowcarb.train\n",
        "search/hpo.py": "def f():\n    from lowcarb.cli import main\n",
        "prune/x.py": "from ..pipeline import registry\n",
    },
    "report": {
        "report/html.py": "from lowcarb.train import fit\n",
        "report/plots.py": "from lowcarb.train.loop import fit_epoch\n",
        "report/x.py": "import lowcarb.compress.lowrank\n",
    },
    "argparse": {"pipeline/runner.py": "import argparse\n"},
    "private": {
        "search/autodistil/supernet.py": "from lowcarb.compress.distill.students import _truncate_into\n",
        "search/hpo.py": "from lowcarb.pipeline.stages._compressed import save\n",
        "pipeline/stages/lora.py": "from lowcarb.pipeline.stages._compressed import save\n",
    },
}
BROKEN["size"] = {
    "report/long.py": "x = 1\n" * (MAX_MODULE_LINES + 1),
    "train/loop.py": "def fit():\n" + "    x = 1\n" * MAX_FUNCTION_LINES,
    # At the limits exactly: not a violation.
    "train/ok.py": "x = 1\n" * (MAX_MODULE_LINES - MAX_FUNCTION_LINES)
    + "def f():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES - 1),
}
EXPECTED_COUNT = {"layers": 4, "report": 3, "argparse": 1, "private": 2, "size": 2}


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_each_rule_fails_on_a_violation(tmp_path, rule):
    src = _tree(tmp_path, BROKEN[rule])
    found = RULES[rule](src)
    assert len(found) == EXPECTED_COUNT[rule], found


def test_allowed_imports_pass(tmp_path):
    src = _tree(
        tmp_path,
        {
            "measure/meter.py": "from lowcarb.errors import ConfigError\nfrom . import footprint\n",
            "store/runstore.py": "from lowcarb.measure import Footprint\n",
            "search/hpo.py": "from lowcarb.train import fit\nfrom lowcarb.models import build_model\n",
            "report/html.py": "from lowcarb.store import RunStore\nfrom lowcarb.train.costs import x\n",
            "cli/run.py": "import argparse\nfrom lowcarb.pipeline import run_recipe\n",
        },
    )
    assert {rule: check(src) for rule, check in RULES.items()} == {r: [] for r in RULES}
