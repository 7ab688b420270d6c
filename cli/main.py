"""Entry point of the `audiorouter` command. One module per command lives in `cli/commands/`."""
from __future__ import annotations

import importlib

import typer

# Each module in cli/commands defines `register(app: typer.Typer) -> None`.
COMMAND_MODULES = ("route", "tools", "cache", "train", "export", "eval", "collect", "batch", "serve")

app = typer.Typer(
    name="audiorouter",
    help="Route audio questions to tools (ASR, sound events, chords, features) only where they help.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def package_version() -> str:
    """The installed distribution's version (pyproject.toml), or "unknown" when run from a bare tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("audiorouter")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _print_version(value: bool) -> None:
    if value:
        print(f"audiorouter {package_version()}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the audiorouter version and exit."),
) -> None:
    """Route audio questions to tools (ASR, sound events, chords, features) only where they help."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"cli.commands.{_name}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
