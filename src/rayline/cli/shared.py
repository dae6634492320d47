"""What the command modules share: the two consoles and the option types several commands take."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

# Piped output (CI logs, scripts) gets wide lines instead of rich's 80-column default.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

SpecArg = Annotated[Path, typer.Argument(help="spec file (YAML)", show_default=False)]


SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override a spec field: --set model.epochs=2 (repeatable)")
]


ModelOpt = Annotated[str, typer.Option("--model", help="best, latest, an alias (champion) or a run id")]
