"""The typer application; each area registers its commands in its own module of this package."""

import typer

app = typer.Typer(
    name="ehrjudge",
    help="Train and use LLM judges of synthetic EHR with RL from verifiable rewards.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# For commands that take free-form --key value settings generated from a config dataclass.
CONFIG_COMMAND = {"allow_extra_args": True, "ignore_unknown_options": True}


def settings_help(intro: str, config_class) -> str:
    """A command's help: its intro, then one paragraph per setting of its config dataclass."""
    from ehrjudge.config import describe

    return f"{intro}\n\nSettings (--key value, after a YAML --config):\n\n" + describe(config_class).replace("\n", "\n\n")
