"""The shape of the code (issue 19, ARCHITECTURE.md): imports sit at the top of a module, where
the layers' rules (``.importlinter``, run by ``make lint``) can see them. An import inside a
function hides a dependency from those rules and a cycle from the reader; it is allowed only for
a heavy or optional dependency that must load lazily, and then its line says why
(``# lazy: ...``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("korag", "ingest", "retrieval", "workers", "api")


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                line = lines[child.lineno - 1]
                if "# lazy:" not in line and "# lazy:" not in lines[child.end_lineno - 1]:
                    found.append((child.lineno, line.strip()))
            visit(child, inside)

    visit(ast.parse(source), False)
    return found


def test_imports_inside_functions_are_lazy_loads_that_say_why():
    unexplained = [f"{path.relative_to(ROOT)}:{line}: {text}"
                   for folder in LIBRARY for path in sorted((ROOT / folder).rglob("*.py"))
                   for line, text in _function_level_imports(path)]
    assert not unexplained, ("imports inside functions without a '# lazy: reason' (move them to the top of the "
                             "module, or say why they must load lazily):\n" + "\n".join(unexplained))


def test_the_check_sees_an_unexplained_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    import json\n    import re  # lazy: a reason\n    return json\n")
    assert _function_level_imports(module) == [(4, "import json")]
