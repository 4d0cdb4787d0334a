"""The ``copart`` Typer application: the commands of :mod:`copart.commands`, and one sentence
with an exit code for every error a user meets."""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from copart import __version__
from copart.models.errors import CopartError

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
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print copart's version and exit."
    ),
) -> None:
    """Part-level video editing with Motion-supervised Co-Part Segmentation."""


def _register() -> None:
    from copart.commands import (
        demo,
        evaluate,
        info,
        parts,
        segment,
        swap,
        synthetic,
        train,
    )

    app.command("train", help=train.HELP, epilog=train.EPILOG)(train.train)
    app.command("demo", help=demo.HELP, epilog=demo.EPILOG)(demo.demo)
    app.command("segment", help=segment.HELP, epilog=segment.EPILOG)(segment.segment)
    app.command("swap", help=swap.HELP, epilog=swap.EPILOG)(swap.swap)
    app.command("eval", help=evaluate.HELP, epilog=evaluate.EPILOG)(evaluate.eval_command)
    app.command("parts", help=parts.HELP, epilog=parts.EPILOG)(parts.parts)
    app.command("info", help=info.HELP, epilog=info.EPILOG)(info.info)
    app.command("synthetic", help=synthetic.HELP, epilog=synthetic.EPILOG)(synthetic.synthetic)


_register()


# What the command line adds to the core's messages, by topic (the core names no flags).
ADVICE = {
    "fomm-checkpoint": "start training from it with copart train --init FILE",
    "pixel-loss": "copart train --loss pixel does so",
    "source-mask": "leave out --source-mask",
}


def message(exc: CopartError) -> str:
    """The one sentence a user reads: the error's, with the command line's advice for its topic."""
    text = str(exc)
    advice = ADVICE.get(getattr(exc, "topic", None))
    return f"{text.rstrip('.')}; {advice}." if advice else text


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors become one sentence on stderr and a non-zero exit."""
    try:
        app(args=argv, prog_name="copart")
    except CopartError as exc:
        stderr.print(f"[bold red]Error:[/] {escape(message(exc))}", markup=True, highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        stderr.print("Interrupted.")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - never a traceback for users
        if os.environ.get("COPART_DEBUG"):
            raise
        stderr.print(
            f"[bold red]Error:[/] copart failed unexpectedly ({type(exc).__name__}: {escape(str(exc))}); "
            "run again with COPART_DEBUG=1 for the details and report it.",
            markup=True,
            highlight=False,
        )
        sys.exit(1)
