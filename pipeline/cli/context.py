"""State shared by the CLI's command modules: global options and the consoles.

Kept apart from the app (cli/__init__.py) so that every command module imports the same state
without importing the app that imports them.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


class State:
    workspace: Path = Path("workspace")
    ray_address: str | None = None


state = State()
