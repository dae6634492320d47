"""The ``rayline`` command: parse arguments, call the library, map errors to one line + exit code.

The commands live in the modules beside this one, by what they do (``lifecycle``, ``traffic``,
``serving``, ``registry``, ``data``, ``doctor``); they are registered here, one line each, in the
order ``rayline --help`` shows them. Heavy modules (ray, torch, mlflow) are imported inside
commands, so ``rayline --help`` and spec errors answer in well under a second.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import traceback
from typing import Annotated

import typer

from rayline._version import __version__
from rayline.cli import data, doctor, lifecycle, registry, serving, traffic
from rayline.cli.shared import err, out
from rayline.errors import RaylineError, SpecError

__all__ = ["app", "main"]

app = typer.Typer(
    name="rayline",
    help="From data to a served model on Ray, from one declarative spec.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Generate or export the built-in datasets.", no_args_is_help=True)
runs_app = typer.Typer(help="The run registry (MLflow).", no_args_is_help=True)
models_app = typer.Typer(help="Registered models: versions and aliases (MLflow).", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")


def _version(value: bool) -> None:
    if value:
        out.print(f"rayline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show full tracebacks on errors")] = False,
) -> None:
    """rayline: data -> train -> tune -> batch predict -> serve, on Ray."""


# `rayline --help` lists the commands in the order they are registered: this order.
app.command("validate")(lifecycle.validate)
app.command("train")(lifecycle.train_cmd)
app.command("tune")(lifecycle.tune_cmd)
app.command("init")(lifecycle.init_cmd)
app.command("run")(lifecycle.run_cmd)
app.command("report")(lifecycle.report_cmd)
app.command("drift")(traffic.drift_cmd)
app.command("replay")(traffic.replay_cmd)
app.command("predict")(lifecycle.predict_cmd)
app.command("evaluate")(lifecycle.evaluate_cmd)
app.command("verify")(serving.verify_cmd)
app.command("serve")(serving.serve_cmd)
app.command("k8s")(serving.k8s_cmd)
app.command("submit")(serving.submit_cmd)
app.command("promote")(traffic.promote_cmd)
app.command("doctor")(doctor.doctor)
data_app.command("taxi")(data.data_taxi)
data_app.command("mnist")(data.data_mnist)
runs_app.command("list")(registry.runs_list)
runs_app.command("show")(registry.runs_show)
models_app.command("list")(registry.models_list)


def _is_click(exc: BaseException, name: str) -> bool:
    """Whether ``exc`` is click's ``name`` error (typer ships its own copy of click, unexported)."""
    return any(cls.__name__ == name and "click" in cls.__module__ for cls in type(exc).__mro__)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every failure is one line on stderr and a non-zero exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    # At exit Python's last garbage collection walks every object torch, MLflow and pandas
    # created, a noticeable part of a short command (docs/benchmarks.md). Frozen objects are
    # skipped; the process is ending, so nothing is lost. Only at exit: an in-process caller
    # (a notebook, a test) keeps its collector.
    atexit.register(gc.freeze)
    debug = "--debug" in args or os.environ.get("RAYLINE_DEBUG") == "1"
    command = typer.main.get_command(app)
    try:
        # Not standalone: click's usage errors come here too, to be one line like ours.
        code = command.main(args=args, prog_name="rayline", standalone_mode=False)
    except RaylineError as exc:
        if debug:
            traceback.print_exc()
        err.print(f"error: {_one_line(str(exc))}", markup=False)
        sys.exit(2 if isinstance(exc, SpecError) else 1)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if _is_click(exc, "NoArgsIsHelpError"):  # `rayline data`: the help is the answer
            exc.show()  # type: ignore[attr-defined]
            sys.exit(2)
        if _is_click(exc, "ClickException"):  # a usage error: an unknown option, a missing argument
            ctx = getattr(exc, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            err.print(f"error: {_one_line(exc.format_message())}{where}", markup=False)  # type: ignore[attr-defined]
            sys.exit(int(getattr(exc, "exit_code", 2)))
        if debug:
            traceback.print_exc()
        err.print(
            f"error: unexpected {type(exc).__name__}: {_one_line(str(exc))[:300]} (rerun with --debug for details)",
            markup=False,
        )
        sys.exit(1)
    if isinstance(code, int) and code != 0:  # typer.Exit(n): drift's 3, an interrupt's 130
        sys.exit(code)
