"""How `vilactl --help` reads: help text that flows, and commands in pipeline order.

Docstrings and help strings are written wrapped at the source's line length; rich renders a
single newline as a hard break, so the panels showed lines cut mid-sentence. `flow` joins the
lines of each paragraph (blank lines still separate paragraphs) and `normalise` applies it once
to every command, group, argument and option after all are registered. `PipelineGroup` lists
commands in the order a corpus goes through them, not alphabetically.
"""
from __future__ import annotations

import inspect

import typer
from typer.core import TyperGroup
from typer.models import ArgumentInfo, OptionInfo

# Setup, then the data path (register/download → score → curate/build → blend), then training
# and what uses a model, then looking at what was recorded.
PIPELINE_ORDER = ("init", "demo", "world", "mirror", "register", "download", "score", "curate",
                  "build", "blend", "train", "eval", "generate", "export", "report", "ablate",
                  "catalog", "sql", "verify")


class PipelineGroup(TyperGroup):
    """A typer group listing its commands in PIPELINE_ORDER (unknown names last, as added)."""

    def list_commands(self, ctx) -> list[str]:  # noqa: ARG002 (click's signature)
        names = list(self.commands)
        rank = {n: i for i, n in enumerate(PIPELINE_ORDER)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), names.index(n)))


def flow(text: str | None) -> str | None:
    """`text` with each paragraph on one line; paragraphs still separated by a blank line."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def _flow_params(callback) -> None:
    for param in inspect.signature(callback).parameters.values():
        if isinstance(param.default, (OptionInfo, ArgumentInfo)):
            param.default.help = flow(param.default.help)


def normalise(app: typer.Typer) -> None:
    """Flow the help of every command and parameter of `app` and its sub-apps, in place."""
    if isinstance(app.info.help, str):           # else typer's "not given" placeholder
        app.info.help = flow(app.info.help)
    if app.registered_callback and app.registered_callback.callback:
        _flow_params(app.registered_callback.callback)
    for cmd in app.registered_commands:
        cmd.help = flow(cmd.help or inspect.getdoc(cmd.callback))
        _flow_params(cmd.callback)
    for group in app.registered_groups:
        group.help = flow(group.help) if isinstance(group.help, str) else group.help
        normalise(group.typer_instance)
