"""The ``ugatit`` command line: thin Typer commands over the library functions."""

import json

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="U-GAT-IT image-to-image translation.")
console = Console()


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"ugatit-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version."),
) -> None:
    """Translate images with U-GAT-IT, train models, export and evaluate them."""


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table.")) -> None:
    """List the registered model names and where each one comes from."""
    from .registry import MODELS

    if as_json:
        rows = [{"name": m.name, "description": m.description, "origin": m.origin} for m in MODELS.values()]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "description", "origin", title="Registered models")
    for m in MODELS.values():
        table.add_row(m.name, m.description, m.origin)
    console.print(table)
    console.print("--model also takes a Hub repo id (user/name), a model folder, a training run folder "
                  "or an official PyTorch checkpoint (*_params_*.pt).")


def main() -> None:
    app()
