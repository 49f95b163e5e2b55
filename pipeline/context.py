"""State shared by the CLI's command modules: global options and the consoles.

Kept apart from cli.py so that `python -m vilactl.pipeline.cli` (where cli.py runs as
__main__) and the command modules see one and the same state.
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
