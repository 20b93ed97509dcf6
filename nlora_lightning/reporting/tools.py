"""Sub-commands of ``nlora`` that work on finished run directories: report, compare, export."""

from __future__ import annotations

from typing import Sequence

__all__ = ["run_tool"]


def run_tool(name: str, argv: Sequence[str]) -> int:
    """Run ``nlora <name> ...``; returns the exit code."""
    if name == "report":
        from nlora_lightning.reporting.report import main

        return main(argv)
    if name == "compare":
        from nlora_lightning.reporting.compare import main

        return main(argv)
    if name == "export":
        from nlora_lightning.export import main

        return main(argv)
    raise ValueError(f"unknown tool {name!r}")
