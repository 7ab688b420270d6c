"""Entry point of the `audiorouter` command. One module per command lives in `cli/commands/`."""
from __future__ import annotations

import importlib

import typer

# Each module in cli/commands defines `register(app: typer.Typer) -> None`.
COMMAND_MODULES = ("route", "tools", "cache", "train", "export", "eval", "collect", "batch")

app = typer.Typer(
    name="audiorouter",
    help="Route audio questions to tools (ASR, sound events, chords, features) only where they help.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"cli.commands.{_name}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
