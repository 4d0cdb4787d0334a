"""The folders the studio may touch, and paths from the browser turned into files there.

Every path the page names is a *reference* ``ROOT/relative/path``: ROOT is ``workspace`` (the
studio's own folder: uploads, cache, renders, saved models) or ``folder1``, ``folder2``, ...
(the folders given on the command line, in order). :meth:`Roots.resolve` is the only way from
a reference to a file: it resolves links and ``..`` and refuses anything that lands outside
its root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from copart.media.read import IMAGE_SUFFIXES

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".gif"}
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES
CHECKPOINT_SUFFIXES = (".pth", ".tar", ".pt", ".ckpt")
WORKSPACE = "workspace"
SUBFOLDERS = ("uploads", "cache", "renders", "models")
# A plain file name: letters, digits, space, dot, dash, underscore; no leading dot.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9 ._-]{0,120}")
LISTED = 500  # at most this many files listed per folder (the page is a chooser, not a file manager)


class Refused(Exception):
    """A request the studio will not serve: ``status`` and one sentence for the page."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def plain_name(name: str) -> str:
    """``name`` if it is a plain file name (no folder, no ``..``, no leading dot), else Refused."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name) or ".." in name:
        raise Refused(f"{name!r} is not a plain file name (letters, digits, spaces, '.', '-', '_'; no folders).")
    return name


class Roots:
    """The workspace (made if missing, with its subfolders) and the given folders."""

    def __init__(self, workspace: Path, folders: Iterable[Path] = ()):
        workspace = Path(workspace).expanduser()
        workspace.mkdir(parents=True, exist_ok=True)
        for sub in SUBFOLDERS:
            (workspace / sub).mkdir(exist_ok=True)
        self.workspace = workspace.resolve()
        self.roots: dict[str, Path] = {WORKSPACE: self.workspace}
        for i, folder in enumerate(folders, 1):
            self.roots[f"folder{i}"] = Path(folder).expanduser().resolve()

    def resolve(self, ref: str, must_exist: bool = True) -> Path:
        """The file a reference names, inside its root; Refused (404) for anything else."""
        if not isinstance(ref, str) or "\x00" in ref or "\\" in ref:
            raise Refused("No such file in the studio's folders.", 404)
        root, _, rel = ref.partition("/")
        base = self.roots.get(root)
        if base is None or not rel or rel.startswith("/"):
            raise Refused("No such file in the studio's folders.", 404)
        path = (base / rel).resolve()
        if path == base or base not in path.parents:
            raise Refused("No such file in the studio's folders.", 404)
        if must_exist and not path.is_file():
            raise Refused("No such file in the studio's folders.", 404)
        return path

    def ref(self, path: Path) -> str | None:
        """The reference of a file inside one of the roots (the most specific), else None."""
        path = Path(path).resolve()
        best = None
        for name, base in self.roots.items():
            if base in path.parents and (best is None or len(str(base)) > len(str(self.roots[best]))):
                best = name
        return None if best is None else f"{best}/{path.relative_to(self.roots[best]).as_posix()}"

    def folders(self) -> dict[str, Path]:
        return {name: base for name, base in self.roots.items() if name != WORKSPACE}

    def files(self, suffixes, include_workspace: tuple = ("uploads",)) -> list[str]:
        """References of the files with these suffixes in the given folders (two levels down; a
        training run's train-vis pictures left out) and in the workspace's ``include_workspace``
        subfolders."""
        found: list[str] = []
        places = [(base, 2) for base in self.folders().values()]
        places += [(self.workspace / sub, 0) for sub in include_workspace]
        for base, depth in places:
            for path in _walk(base, depth):
                if path.name.lower().endswith(tuple(suffixes)) and "train-vis" not in path.parts:
                    ref = self.ref(path)
                    if ref is not None and ref not in found:
                        found.append(ref)
        return found

    def run_folders(self) -> list[str]:
        """References of the training run folders (a folder holding log.jsonl) in the given
        folders, the folders themselves included, two levels down; as ``ROOT/path/log.jsonl``."""
        out = []
        for base in self.folders().values():
            for path in _walk(base, 3):
                if path.name == "log.jsonl":
                    ref = self.ref(path)
                    if ref is not None:
                        out.append(ref)
        return out


def _walk(base: Path, depth: int) -> list[Path]:
    """Files under ``base`` up to ``depth`` folders down, hidden ones left out, sorted."""
    out: list[Path] = []
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError:
        return out
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_file():
                out.append(Path(entry.path))
            elif entry.is_dir() and depth > 0:
                out += _walk(Path(entry.path), depth - 1)
        except OSError:
            continue
        if len(out) >= LISTED:
            break
    return out[:LISTED]
