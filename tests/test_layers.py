"""Imports run one way: app -> commands -> jobs -> loading / hub / inference -> media -> models.

The checker reads each module's source (nothing is imported) and is tested on planted wrong
imports, so that it can fail."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each layer, and what it may import besides itself: module paths, matched as prefixes at dot
# boundaries (``copart.models`` allows ``copart.models.errors``, never ``copart.modelsx``).
# No layer is allowed the whole of ``copart``. The hub (models by name, and every download: S3FD's
# for media/faces.py, VGG-19's for training, 2DFAN4's for evaluation) imports only presets and
# the core, so it sits beneath media and every layer above may use it.
LAYERS = {
    "copart.__main__": {"copart.app"},
    # app and commands are the command line: the ui serves them only
    "copart.app": {"copart.__version__", "copart.commands", "copart.ui", "copart.hub", "copart.models.errors",
                   "copart.models.files"},
    # commands: their jobs, the ui, and below; no command imports another (only their options)
    # (and the registry of named presets and published models: --k, --preset, copart models)
    "copart.commands": {"copart.ui", "copart.demo", "copart.editing", "copart.training", "copart.evaluation",
                        "copart.loading", "copart.hub", "copart.presets", "copart.models", "copart.batch",
                        "copart.studio"},
    # many targets in one command: the editing jobs' runner, with training's process group under torchrun
    "copart.batch": {"copart.loading", "copart.training", "copart.media", "copart.models"},
    "copart.ui": set(),
    # the jobs
    "copart.demo": {"copart.editing", "copart.training", "copart.evaluation", "copart.loading", "copart.media",
                    "copart.models"},
    # the studio: a web page over the same jobs (and the pieces they are made of)
    "copart.studio": {"copart.__version__", "copart.editing", "copart.inference", "copart.loading", "copart.hub",
                      "copart.presets", "copart.media", "copart.models"},
    "copart.editing": {"copart.inference", "copart.loading", "copart.media", "copart.models"},
    "copart.evaluation": {"copart.inference", "copart.loading", "copart.media", "copart.hub", "copart.models"},
    "copart.training": {"copart.presets", "copart.media", "copart.hub", "copart.models"},
    # models by name, and the model on batches
    "copart.loading": {"copart.hub", "copart.presets", "copart.models"},
    "copart.hub": {"copart.presets", "copart.models"},
    "copart.inference": {"copart.models"},
    "copart.media": {"copart.hub", "copart.models"},
    "copart.presets": {"copart.models.errors"},
    # the core imports nothing from the application
    "copart.models": set(),
}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# The root package, copart, imports only what tells the core what a file looks like (the core knows
# no file format: copart.models.files.describe is set from copart.media.kinds).
ROOT_PACKAGE = {"copart.media.kinds", "copart.models.files"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = {"copart_cli": "copart", "models": "copart.models", "presets": "copart.presets"}[parts[0]]
    name = ".".join(parts)
    return name.removesuffix(".__init__")


def _imports(source: str, name: str, is_package: bool) -> set[str]:
    """What of copart the module ``name`` imports, each as the dotted path it reaches:
    ``from copart.media import read`` -> ``copart.media.read``, ``from copart import
    __version__`` -> ``copart.__version__`` (never the bare package the names come from)."""
    package = name if is_package else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(kept + ([base] if base else []))
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {i for i in found if _within(i, "copart")}


def wrong_imports(modules: dict[str, tuple[str, bool]]) -> list[str]:
    """``modules``: module name -> (source, is a package). One line per import against the layers."""
    wrong = []
    for name, (source, is_package) in sorted(modules.items()):
        layers = [layer for layer in LAYERS if _within(name, layer)]
        if name != "copart" and not layers:
            wrong.append(f"{name} belongs to no layer")
            continue
        layer = max(layers, key=len) if layers else None
        allowed = LAYERS.get(layer, set()) if layer else ROOT_PACKAGE

        for imported in sorted(_imports(source, name, is_package)):
            if layer == "copart.commands" and name != "copart.commands" and _within(imported, "copart.commands"):
                if not _within(imported, "copart.commands.options"):  # no command imports another
                    wrong.append(f"{name} imports {imported}")
            elif not (layer is not None and _within(imported, layer) or any(_within(imported, a) for a in allowed)):
                wrong.append(f"{name} imports {imported}")
    return wrong


def _tree() -> dict[str, tuple[str, bool]]:
    return {_module_name(path): (path.read_text(), path.name == "__init__.py")
            for d in ("copart_cli", "models", "presets") for path in sorted((ROOT / d).rglob("*.py"))}


def test_no_layer_is_allowed_the_whole_of_copart():
    for layer, allowed in LAYERS.items():
        assert all(a.startswith("copart.") for a in allowed), layer


def test_imports_run_one_way():
    """app -> commands -> jobs -> loading / hub / inference -> media -> models; no command imports another."""
    tree = _tree()
    assert "copart.editing.swap" in tree and "copart.models.losses" in tree
    wrong = wrong_imports(tree)
    assert not wrong, wrong


def _planted(name: str, source: str, is_package: bool = False) -> list[str]:
    return wrong_imports({name: (source, is_package)})


@pytest.mark.parametrize("name, source, reported", [
    # a job importing another job that it does not call (training is below nothing but commands)
    ("copart.training.loop", "from copart.editing import swap\n", "copart.training.loop imports copart.editing.swap"),
    # the hub reaching up into a command, from the root package
    ("copart.hub", "from copart import commands\n", "copart.hub imports copart.commands"),
    ("copart.loading", "import copart.demo\n", "copart.loading imports copart.demo"),
    # the app reaching past the commands into a job; a job using the ui that serves the command line only
    ("copart.app", "from copart import demo\n", "copart.app imports copart.demo"),
    ("copart.editing.swap", "from copart.ui import bar\n", "copart.editing.swap imports copart.ui.bar"),
    # the hub reaching up into media (it sits beneath: media downloads through it)
    ("copart.hub", "from copart.media.faces import s3fd_folder\n", "copart.hub imports copart.media.faces.s3fd_folder"),
    # the core importing the application, lazily inside a function
    ("copart.models.losses", "def f():\n    from copart import hub\n", "copart.models.losses imports copart.hub"),
    # relative imports resolve to what they reach
    ("copart.media.read", "from .. import loading\n", "copart.media.read imports copart.loading"),
    # one command importing another
    ("copart.commands.swap", "from . import segment\n", "copart.commands.swap imports copart.commands.segment"),
    # a prefix matches at dot boundaries only: copart.models does not allow copart.modelsx
    ("copart.inference", "import copart.modelsx\n", "copart.inference imports copart.modelsx"),
    # the bare package is not a free pass
    ("copart.training.data", "import copart\n", "copart.training.data imports copart"),
    ("copart", "from copart import hub\n", "copart imports copart.hub"),
])
def test_the_checker_reports_a_planted_wrong_import(name, source, reported):
    assert _planted(name, source, is_package=name == "copart") == [reported]


@pytest.mark.parametrize("name, source", [
    ("copart.app", "from copart import __version__\nfrom copart.models.errors import CopartError\n"),
    ("copart.training.loop", "from copart import presets\nfrom .data import discover\n"),
    ("copart.commands.swap", "from copart import ui\nfrom . import options\n"),
    ("copart.loading", "from copart import hub, presets\nfrom copart.models.checkpoint import read_checkpoint\n"),
    ("copart.media.pipeline", "from . import render\nfrom copart.models.errors import CopartError\n"),
])
def test_the_checker_passes_imports_that_run_down(name, source):
    assert _planted(name, source) == []


def test_a_module_outside_every_layer_is_reported():
    assert _planted("copart.newthing", "") == ["copart.newthing belongs to no layer"]
