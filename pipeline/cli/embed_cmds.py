"""``crosscam embed`` and ``crosscam weights``: owned by the embedder work (issue 2)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
