"""The house rules that keep copart easy to change (issue 22): short functions in the training
package, and a model core that imports nothing but itself, the standard library, torch and numpy.
Both checks read the source with ``ast``; each is also run on a planted bad example, so that a
check that could never fail would be caught."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LONGEST_FUNCTION = 80  # lines, decorators and docstring included
CORE_ALLOWED = {"torch", "numpy"}  # besides the core itself and the standard library


def long_functions(source: str, name: str, limit: int = LONGEST_FUNCTION) -> list[str]:
    """``name:line function (N lines)`` for every function or method in ``source`` longer than ``limit``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            length = node.end_lineno - first + 1
            if length > limit:
                found.append(f"{name}:{node.lineno} {node.name} ({length} lines)")
    return found


def foreign_imports(source: str, name: str, package: str = "copart.models") -> list[str]:
    """``name:line module`` for every import in ``source`` (a module of ``package``) of something
    other than ``package`` itself, the standard library, torch and numpy. Relative imports that
    climb out of the package (``from .. import hub``) count as foreign; so do imports inside
    functions and ``import_module("...")`` calls with a literal name."""
    found = []

    def check(module: str, line: int) -> None:
        top = module.split(".")[0]
        inside = module == package or module.startswith(package + ".")
        if not inside and top not in sys.stdlib_module_names and top not in CORE_ALLOWED:
            found.append(f"{name}:{line} {module}")

    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                check(node.module or "", node.lineno)
            elif node.level > 1:  # the core is one flat package: ".." leaves it
                found.append(f"{name}:{node.lineno} {'.' * node.level}{node.module or ''}")
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and not node.args[0].value.startswith(".")):
            check(node.args[0].value, node.lineno)
    return found


def test_no_function_in_the_training_package_is_over_80_lines():
    files = sorted((ROOT / "copart_cli" / "training").glob("*.py"))
    assert len(files) >= 3
    found = [hit for path in files for hit in long_functions(path.read_text(), path.name)]
    assert found == [], "functions over 80 lines: " + ", ".join(found)


def test_the_length_check_reports_a_long_function():
    body = "".join(f"        x{i} = {i}\n" for i in range(85))
    planted = f"class A:\n    @staticmethod\n    def long():\n{body}\ndef short():\n    pass\n"
    assert long_functions(planted, "planted.py") == ["planted.py:3 long (87 lines)"]


def test_the_model_core_imports_only_itself_the_standard_library_torch_and_numpy():
    files = sorted((ROOT / "models").glob("*.py"))
    assert len(files) >= 5
    found = [hit for path in files for hit in foreign_imports(path.read_text(), path.name)]
    assert found == [], "imports from outside the core: " + ", ".join(found)


def test_the_import_check_reports_planted_imports():
    planted = (
        "import os, torch\n"
        "import numpy as np\n"
        "from torch import nn\n"
        "from . import config\n"
        "from .errors import CopartError\n"
        "from copart.models.files import atomic_path\n"
        "import yaml\n"
        "from copart import hub\n"
        "from .. import presets\n"
        "def later():\n"
        "    import cv2\n"
        "    from importlib import import_module\n"
        "    return import_module('copart.media.read')\n"
    )
    assert foreign_imports(planted, "planted.py") == [
        "planted.py:7 yaml",
        "planted.py:8 copart",
        "planted.py:9 ..",
        "planted.py:11 cv2",
        "planted.py:13 copart.media.read",
    ]

