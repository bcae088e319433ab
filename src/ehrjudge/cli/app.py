"""The typer application; each area registers its commands in its own module of this package.

Nothing heavy is imported here or by the command modules at import time (no torch, sklearn, transformers or
pandas): `ehrjudge --help` stays fast, and a command imports what it needs when it runs. A command's list of
settings is built from its config dataclass only when that command's --help is shown (`settings_command`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import typer
from typer.core import TyperCommand

app = typer.Typer(
    name="ehrjudge",
    help="Train and use LLM judges of synthetic EHR with RL from verifiable rewards.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# For commands that take free-form --key value settings generated from a config dataclass.
CONFIG_COMMAND = {"allow_extra_args": True, "ignore_unknown_options": True}


def _print_version(value: bool) -> None:
    if value:
        from ehrjudge import __version__

        typer.echo(f"ehrjudge {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """Train and use LLM judges of synthetic EHR with RL from verifiable rewards."""


class SettingsCommand(TyperCommand):
    """A command whose --help ends with the settings of a config dataclass, imported only when help is shown."""

    config_class = ""  # "module:ClassName"

    def format_help(self, ctx, formatter) -> None:
        if not getattr(self, "_settings_listed", False):
            from ehrjudge.config import describe

            module, name = self.config_class.split(":")
            settings = describe(getattr(importlib.import_module(module), name))
            if self.rich_markup_mode == "rich":  # help strings are plain text: E_pi[k] is not a style tag
                from rich.markup import escape

                settings = escape(settings)
            self.help = (f"{self.help}\n\nSettings (--key value, after a YAML --config):\n\n"
                         + settings.replace("\n", "\n\n"))
            self._settings_listed = True
        super().format_help(ctx, formatter)


def settings_command(config_class: str) -> type[SettingsCommand]:
    """The command class for `app.command(cls=...)` that lists `config_class` ("module:Name") in its --help."""
    return type("SettingsCommand", (SettingsCommand,), {"config_class": config_class})


def one_of(primary, alias, primary_flag: str, alias_flag: str):
    """The value of an option given under its name or under its old (hidden) spelling, not both."""
    if primary is not None and alias is not None:
        raise typer.BadParameter(f"give {primary_flag} once ({alias_flag} is its old spelling)")
    return primary if primary is not None else alias


def read_records(path: Path, schema):
    """Synthetic records validated against `schema`. The score columns of a scoring run (e.g. a judge dataset
    split) are ignored, with a note naming them, so labelled files can be judged or re-scored as they are."""
    from ehrjudge.scoring.realism import read_unscored_records

    records, ignored = read_unscored_records(path, schema)
    if ignored:
        typer.echo(f"note: ignoring {len(ignored)} score column(s) of {path}: {', '.join(ignored)}", err=True)
    return records
