"""The ``copart`` Typer application: the commands of :mod:`copart.commands`, and one sentence
with an exit code for every error a user meets."""

from __future__ import annotations

import functools
import os
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from copart import __version__
from copart.models.errors import CopartError, Interrupted
from copart.models.files import UNWRITABLE, unwritable

app = typer.Typer(
    name="copart",
    help=(
        "Part-level video editing with Motion-supervised Co-Part Segmentation "
        "(Siarohin et al., 2020).\n\nExamples: copart demo demo/   |   copart swap --parts hair target.mp4 face.jpg"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"copart {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print copart's version and exit."
    ),
    offline: bool = typer.Option(False, "--offline", help="Never touch the network (the same as COPART_OFFLINE=1); "
                                 "accepted anywhere on the command line."),
) -> None:
    """Part-level video editing with Motion-supervised Co-Part Segmentation."""
    if offline:  # main() takes --offline out of the arguments; this is for app() called directly
        from copart import hub

        saved = os.environ.get("COPART_OFFLINE"), hub.OFFLINE_FLAG
        _go_offline()
        ctx.call_on_close(lambda: _restore_offline(*saved))


def _go_offline() -> None:
    from copart import hub

    os.environ["COPART_OFFLINE"] = "1"  # for any process this one starts
    hub.OFFLINE_FLAG = True  # so that messages say --offline, what the user typed


def _restore_offline(env: Optional[str], flag: bool) -> None:
    """As it was before this command (for a caller that runs several in one process)."""
    from copart import hub

    if env is None:
        os.environ.pop("COPART_OFFLINE", None)
    else:
        os.environ["COPART_OFFLINE"] = env
    hub.OFFLINE_FLAG = flag


def _take_offline(args: list[str]) -> tuple[list[str], bool]:
    """``--offline`` wherever it is given (before the subcommand, after it, among its
    arguments; not after ``--``): the arguments without it, and whether it was there."""
    end = args.index("--") if "--" in args else len(args)
    kept = [a for a in args[:end] if a != "--offline"] + args[end:]
    return kept, len(kept) != len(args)


class _Stopped(Exception):
    """Ctrl-C inside a command, carried past Typer (which turns KeyboardInterrupt into a silent
    exit 130) to :func:`main`, with the sentence that says what was kept."""


# What an interrupted command says when the work below it did not say more itself.
INTERRUPTED = {
    "swap": "interrupted; nothing written",
    "segment": "interrupted; nothing written",
    "parts": "interrupted; nothing written",
    "synthetic": "interrupted; the clips finished so far are kept, and running it again continues",
    "train": "interrupted before training started; nothing saved",
    "models": "interrupted; nothing was added to the cache",
    "studio": "the studio stopped; nothing half-written is left",
}


def _interruptible(name: str, command):
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt as exc:
            text = str(exc) if isinstance(exc, Interrupted) and str(exc) else INTERRUPTED.get(name, "interrupted")
            raise _Stopped(text) from None

    return run


def _register() -> None:
    from copart.commands import demo, evaluate, info, models, parts, segment, studio, swap, synthetic, train

    for name, module, function in (
        ("train", train, train.train),
        ("demo", demo, demo.demo),
        ("segment", segment, segment.segment),
        ("swap", swap, swap.swap),
        ("eval", evaluate, evaluate.eval_command),
        ("parts", parts, parts.parts),
        ("info", info, info.info),
        ("synthetic", synthetic, synthetic.synthetic),
        ("studio", studio, studio.studio),
    ):
        app.command(name, help=module.HELP, epilog=module.EPILOG)(_interruptible(name, function))
    for command in models.app.registered_commands:
        command.callback = _interruptible("models", command.callback)
    app.add_typer(models.app, name="models")


_register()


# What the command line adds to the core's messages, by topic (the core names no flags).
ADVICE = {
    "fomm-checkpoint": "start training from it with copart train --init FILE",
    "pixel-loss": "copart train --loss pixel does so",
    "source-mask": "leave out --source-mask",
    "face-detector": "or use --detector haar",
    "face-reference": "give --face a picture in which the face to follow is seen from the front",
}


def message(exc: CopartError) -> str:
    """The one sentence a user reads: the error's, with the command line's advice for its topic."""
    text = str(exc)
    advice = ADVICE.get(getattr(exc, "topic", None))
    return f"{text.rstrip('.')}; {advice}." if advice else text


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors become one sentence on stderr and a non-zero exit."""
    from copart import hub, ui

    args, offline = _take_offline(list(sys.argv[1:] if argv is None else argv))
    saved = os.environ.get("COPART_OFFLINE"), hub.OFFLINE_FLAG, hub.DEFAULT_DOWNLOADS
    hub.OFFLINE_FLAG = False
    if offline:
        _go_offline()
    hub.DEFAULT_DOWNLOADS = ui.downloads(ui.console())  # a model fetched deep in a command shows its bar
    try:
        _run(args)
    finally:  # as it was (for a caller that runs main() more than once in one process)
        _restore_offline(saved[0], saved[1])
        hub.DEFAULT_DOWNLOADS = saved[2]


def _run(args: list[str]) -> None:
    try:
        app(args=args, prog_name="copart")
    except CopartError as exc:
        stderr.print(f"[bold red]Error:[/] {escape(message(exc))}", markup=True, highlight=False)
        sys.exit(exc.exit_code)
    except _Stopped as exc:
        text = str(exc)
        stderr.print(f"{text[:1].upper()}{text[1:]}.", markup=False, highlight=False)
        sys.exit(130)
    except KeyboardInterrupt:  # outside any command (while loading one)
        stderr.print("Interrupted.")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - never a traceback for users
        if os.environ.get("COPART_DEBUG"):
            raise
        if isinstance(exc, OSError) and exc.errno in UNWRITABLE:  # the file system said no, after all checks
            stderr.print(f"[bold red]Error:[/] {escape(str(unwritable(exc.filename or 'a file', exc)))}",
                         markup=True, highlight=False)
            sys.exit(2)
        stderr.print(
            f"[bold red]Error:[/] copart failed unexpectedly ({type(exc).__name__}: {escape(str(exc))}); "
            "run again with COPART_DEBUG=1 for the details and report it.",
            markup=True,
            highlight=False,
        )
        sys.exit(1)
