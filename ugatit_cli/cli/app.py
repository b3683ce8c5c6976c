"""The ``ugatit`` command line: the Typer app, its error rule and entry point. Each command lives in its own
module of this package (``translate``, ``train``, ``export``, ``evaluate``, ``models``, ``demo``) and registers on
``app`` when imported (at the end of this module).

The exit-code rule (README, "Exit status"): 0 everything asked for was done; 1 some inputs failed (each named
on stderr with its reason) and the rest were done; 2 nothing could start (bad options, a MODEL or DATA_DIR
that cannot be found or read). A :class:`~ugatit_cli.errors.UserError` carries its code.
"""

import sys
import warnings
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import UserError

# Typer >= 0.22 vendors Click: its usage errors are its own classes, found from its public BadParameter.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
try:
    from typer._click.exceptions import NoArgsIsHelpError as _NoArgsIsHelpError
except ImportError:  # older Typer on Click itself
    from click.exceptions import NoArgsIsHelpError as _NoArgsIsHelpError
_Abort = getattr(typer, "Abort", click.Abort)

console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)  # soft_wrap: a message stays one line


def print_error(message: str) -> None:
    """One red line on stderr."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")


def results_note(folders: list[str], shown: int = 3) -> str:
    """``"N folder(s) of earlier ugatit results left out (A, B, ...; name one to read it)"``: the folders
    of this tool's results that a recursive read passed over (``core.files.OUTPUT_MARK``), the first ``shown``."""
    more = f", and {len(folders) - shown} more" if len(folders) > shown else ""
    return (f"{len(folders)} folder(s) of earlier ugatit results left out ({', '.join(folders[:shown])}{more}; "
            "name one to read it)")


#: Options whose value may be left out: (option, the values it takes, the value when it is alone).
OPTIONAL_VALUES = (("--faces", ("composite", "crops"), "composite"),)


def optional_values(args: list[str]) -> list[str]:
    """``--faces`` alone means ``--faces composite``: Click options need a value, so the word is put in
    where none of the option's values follows."""
    out = list(args)
    for option, values, alone in OPTIONAL_VALUES:
        i = 0
        while i < len(out):
            if out[i] == "--":
                break
            if out[i] == option and (i + 1 == len(out) or out[i + 1] not in values):
                out.insert(i + 1, alone)
            i += 1
    return out


class _UserErrorsAsExitCodes(TyperGroup):
    """Every command's :class:`UserError` becomes one red line on stderr and its ``exit_code`` (2: usage,
    1: bad input), never a traceback; commands need no handling of their own."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, optional_values(args))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra) -> Any:
        """Usage errors (a missing option, a value not among the choices) in the same one red line as every
        other error, instead of Typer's boxed panel; help (--help, no arguments) is printed as usual."""
        _plain_defaults(self)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except _ClickException as exc:
            context = getattr(exc, "ctx", None)
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            print_error(" ".join(exc.format_message().split()) + hint)
            sys.exit(exc.exit_code)
        except (click.Abort, _Abort):
            print_error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _plain_defaults(group: click.Group) -> None:
    """Defaults described in words or computed (``show_default="..."``) print as "(default: X)" in the help
    text, instead of Typer's "[default: (X)]"."""
    for command in group.commands.values():
        for param in command.params:
            shown = getattr(param, "show_default", None)
            if isinstance(shown, str) and shown:
                param.help = f"{param.help or ''} (default: {shown})".strip()
                param.show_default = False


def warn_in_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning as one line on stderr, never a stack excerpt."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


app = typer.Typer(cls=_UserErrorsAsExitCodes, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False, help="GAN image-to-image translation: U-GAT-IT, pix2pixHD, TUNIT.")


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"ugatit-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version."),
) -> None:
    """Translate images with U-GAT-IT, train models, export and evaluate them."""
    warnings.showwarning = warn_in_one_line
    if PLUGIN_ERROR is not None:  # a family plugin that fails to import: one line, exit 2
        raise PLUGIN_ERROR


def main() -> None:
    app()


def family_help(key: str, families: dict | None = None) -> str:
    """What the families add to the help of a shared option (``Family.cli_help``), e.g. "U-GAT-IT: a2b or b2a"."""
    found = [text if text.startswith(f"{f.title}:") else f"{f.title}: {text}"  # a plugin's own prefix, once
             for f in (families or FAMILIES).values() if key in f.cli_help for text in [f.cli_help[key]]]
    return "; ".join(found)


def _families() -> dict:
    """Every model family (built in and plugins) for the generated options; a plugin's import error is
    kept and reported by the root command rather than as a traceback at import."""
    global PLUGIN_ERROR
    from ..families.base import families

    try:
        return families()
    except UserError as exc:
        PLUGIN_ERROR = exc
        from ..families.base import get_family

        return {"ugatit": get_family("ugatit")}


PLUGIN_ERROR: UserError | None = None
FAMILIES = _families()

from . import cluster, demo, evaluate, export, models, train, translate  # noqa: E402, F401  (each registers its command)
