"""Entry point of the `tokenjoule` CLI.

Each module in COMMAND_MODULES defines `register(app)`. Those modules import only light
packages at import time (typer, rich, pydantic); torch, transformers and vLLM are imported
inside the command bodies, so `tokenjoule --help` stays fast and never imports torch.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer

from tokenjoule import __version__
from tokenjoule.errors import TokenjouleError

COMMAND_MODULES = (
    "tokenjoule.cli.measure",
    "tokenjoule.cli.results",
    "tokenjoule.cli.models",
    "tokenjoule.cli.demo",
    "tokenjoule.cli.workload",
    "tokenjoule.cli.workload_paper",
    "tokenjoule.cli.estimate",
    "tokenjoule.cli.sweep",
    "tokenjoule.cli.serve",
    "tokenjoule.cli.report",
    "tokenjoule.cli.validate",
    "tokenjoule.cli.speculative",
)

app = typer.Typer(
    name="tokenjoule",
    help="Measure, model and reduce the energy of LLM inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tokenjoule {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Measure, model and reduce the energy of LLM inference."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def one_line(exc: BaseException) -> str:
    """A one-line description of an error for the user (pydantic errors included)."""
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # type: ignore[assignment]
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ())) or "value"
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}")
        return "; ".join(parts)
    return " ".join(str(exc).split()) or type(exc).__name__


def _click_exceptions(name: str) -> tuple[type[BaseException], ...]:
    """The exception class `name` of click and of the copy of click that newer typer releases
    vendor (`typer._click`): their classes are unrelated, so both must be caught."""
    classes = [getattr(click.exceptions, name)]
    try:
        from typer._click import exceptions as vendored  # typer >= 0.2x ships its own click
    except ImportError:
        vendored = None
    if vendored is not None and hasattr(vendored, name):
        classes.append(getattr(vendored, name))
    return tuple(classes)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line on stderr and a non-zero exit code."""
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = TokenjouleError  # type: ignore[misc,assignment]
    try:
        result = app(args=argv, standalone_mode=False)
        return int(result) if isinstance(result, int) else 0
    except TokenjouleError as exc:
        typer.echo(f"error: {one_line(exc)}", err=True)
        return exc.exit_code
    except ValidationError as exc:
        typer.echo(f"error: {one_line(exc)}", err=True)
        return 2
    except _click_exceptions("Exit") as exc:
        return exc.exit_code
    except _click_exceptions("ClickException") as exc:
        exc.show()
        return exc.exit_code
    except _click_exceptions("Abort") + (KeyboardInterrupt,):
        typer.echo("interrupted", err=True)
        return 130


def entry() -> None:  # pragma: no cover - console script shim
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
