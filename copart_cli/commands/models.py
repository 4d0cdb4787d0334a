"""``copart models``: the published models by name — list, pull, verify, path, remove."""

from __future__ import annotations

import json
from typing import List

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from copart import ui

HELP = "List, fetch, verify and remove the published models copart uses (cache: $COPART_HOME)."
EPILOG = (
    "Examples:\n\n"
    "  copart models list\n\n"
    "  copart models pull vox-10segments s3fd\n\n"
    "  copart models pull vox-5segments s3fd vgg19 2dfan4   (what swap, train and eval use: then work offline)\n\n"
    "  copart models verify\n\n"
    "  copart models path vox-cpk\n\n"
    "Sources, in order: $COPART_MIRROR (URL/FILE, URL/FILE.sha256), the authors' Yandex Disk, their Google\n"
    "Drive, a file's own URL; COPART_OFFLINE=1 or --offline never touches the network."
    "\n\nMore: docs/models.md in copart's source."
)

def _entry(name: str):
    """The catalog's model a user names: by its name or file, or by the name of the preset it was
    made with (the registry's published model of that preset)."""
    from copart import hub, presets

    named = presets.published(name)
    return hub.entry(named.model if named is not None else name)


app = typer.Typer(help=HELP, epilog=EPILOG, no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})


@app.command("list", help="Every model copart knows: name, K, what it is for, size, cached, and what it was "
                          "verified against.")
def list_models(as_json: bool = typer.Option(False, "--json", help="Print the list as JSON.")) -> None:
    from copart import hub, presets

    made_with = {named.model: named for named in presets.registry().values() if named.model}
    rows = []
    for e in hub.catalog().values():
        record = hub.recorded(e)
        cached = hub.is_cached(e)
        size = e.path.stat().st_size if cached else (record or {}).get("size") or e.approx_size
        named = made_with.get(e.name)  # a part-swap model: its K and preset are the registry's
        rows.append({"name": e.name, "k": named.k if named else e.k, "preset": named.preset if named else None,
                     "by_k": bool(named and named.by_k), "purpose": e.purpose, "file": e.file, "size": size,
                     "cached": cached, "verified_against": hub.verified_against(e) if cached else None,
                     "path": str(e.path)})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"copart models (cache {hub.home()})", title_justify="left")
    for column in ("name", "K", "for", "size", "cached", "verified against"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], str(row["k"] or ""), row["purpose"], hub.human_size(row["size"]),
                      "yes" if row["cached"] else "no", row["verified_against"] or "")
    Console(highlight=False).print(table)


@app.command("pull", help="Fetch models into the cache (verified); nothing to do for those already there. "
                          "Every name is tried; the command fails if any could not be fetched.")
def pull(names: List[str] = typer.Argument(..., help="Model names (copart models list)."),
         force: bool = typer.Option(False, "--force", help="Fetch again even when cached.")) -> None:
    from copart import hub
    from copart.models.errors import CopartError

    console = ui.console()
    failed = []
    for name in names:
        try:
            e = _entry(name)
            if hub.is_cached(e) and not force:
                typer.echo(f"{e.name}: already in {e.path}")
                continue
            path = hub.pull(e, ui.downloads(console), force=force)
        except CopartError as exc:  # said now (or, for one name, as the error); the next name is tried
            if len(names) == 1:
                raise
            console.print(f"[bold red]Failed:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            failed.append(name)
            continue
        typer.echo(f"{e.name}: fetched and verified against {hub.verified_against(e)} -> {path}")
    if failed:
        done = len(names) - len(failed)
        raise CopartError(f"{len(failed)} of {len(names)} models could not be fetched ({', '.join(failed)}; each "
                          f"said why above)" + (f"; the other {done} are in the cache." if done else "."))


@app.command("verify", help="Re-check cached models against the checksums recorded when they were fetched.")
def verify(names: List[str] = typer.Argument(None, help="Model names (default: every cached one).")) -> None:
    from copart import hub
    from copart.models.errors import CopartError

    entries = [_entry(n) for n in names] if names else [e for e in hub.catalog().values() if hub.is_cached(e)]
    if not entries:
        raise CopartError(f"Nothing to verify: no model is installed in the cache ({hub.home()}, and PyTorch's hub "
                          f"cache for face-alignment's and VGG-19's files); fetch some with copart models pull "
                          f"NAME... (copart models list names them).")
    failed = []
    for e in entries:
        try:
            typer.echo(f"{e.name}: ok, {hub.verify(e)}")
        except CopartError as exc:  # the error names the file: one line, below
            failed.append(exc)
    if failed:
        raise failed[0] if len(failed) == 1 else CopartError(
            f"{len(failed)} models fail their checks: " + "; ".join(str(f).rstrip(".") for f in failed) + ".")


@app.command("path", help="Where a model's file is (or goes) in the cache.")
def path(name: str = typer.Argument(..., help="Model name.")) -> None:
    typer.echo(str(_entry(name).path))


@app.command("remove", help="Delete a model's file from the cache.")
def remove(names: List[str] = typer.Argument(..., help="Model names.")) -> None:
    from copart import hub

    for name in names:
        e = _entry(name)
        typer.echo(f"{e.name}: {'removed ' + str(e.path) if hub.remove(e) else 'was not in the cache'}")
