"""``copart studio``: a local web page to choose parts by clicking, preview the swap and render it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer

from copart.models.errors import CopartError

HELP = "Open copart studio: a local web page to pick parts by clicking, preview the swap, render it."
EPILOG = (
    "Examples:\n\n"
    "  copart studio                       (http://127.0.0.1:8765/ in your browser)\n\n"
    "  copart studio clips/ faces/ runs/   (the page offers the videos, images, checkpoints and training runs in them)\n\n"
    "  copart studio --no-browser --port 9000\n\n"
    "With --host the studio answers other machines too, and only requests that carry the access token "
    "it prints."
    "\n\nMore: docs/studio.md in copart's source."
)
WEB_MODULES = ("starlette", "uvicorn")


def studio(
    folders: list[Path] = typer.Argument(None, help="Folders whose videos, images, checkpoints and training runs "
                                                     "the page offers (nothing outside them and the workspace is read)."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    host: str | None = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1, this machine "
                                                            "only); any --host requires the printed access token."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open the page in a browser."),
    workspace: Path | None = typer.Option(None, "--workspace", help="Folder for uploads, previews, renders and "
                                                                      "saved models (default ~/.cache/copart/studio)."),
    max_upload: float = typer.Option(512, "--max-upload", min=0.001, help="Largest upload accepted, in MB."),
) -> None:
    missing = [m for m in WEB_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise CopartError(f"copart studio needs {' and '.join(missing)}, which are not installed; "
                          f"install the studio extra: pip install 'copart[studio]'.")
    folders = list(folders or [])
    for folder in folders:
        if not folder.is_dir():
            raise CopartError(f"{folder} is not a folder; give folders of videos, images, checkpoints or runs.")
    from copart import hub
    from copart.studio.files import Roots
    from copart.studio.server import has_display, new_token, serve

    home = workspace if workspace is not None else hub.home() / "studio"
    if home.exists() and not home.is_dir():
        raise CopartError(f"--workspace {home} is a file, not a folder.")
    try:
        roots = Roots(home, folders)
    except OSError as exc:
        raise CopartError(f"Cannot make the studio's workspace {home} ({exc.strerror or exc}); "
                          f"give another with --workspace.") from None
    token = None
    if host is not None:
        token = new_token()
        typer.echo(f"Warning: with --host {host} the studio answers every machine that can reach this one on that "
                   f"address. Only requests carrying its access token are served; the token is in the address "
                   f"below, so share that address only with people who may use this studio.", err=True)
    open_browser = not no_browser and has_display()
    serve(roots, host or "127.0.0.1", port, token, open_browser, typer.echo, int(max_upload * 2**20))
