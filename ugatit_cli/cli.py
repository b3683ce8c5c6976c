"""The ``ugatit`` command line: thin Typer commands over the library functions."""

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .errors import UsageError, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="U-GAT-IT image-to-image translation.")
console = Console()
err_console = Console(stderr=True)


def _fail(exc: UserError) -> typer.Exit:
    """One line on stderr; exit 2 for a usage error, 1 when the work itself failed."""
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(2 if isinstance(exc, UsageError) else 1)


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


class ExportFormat(str, Enum):
    safetensors = "safetensors"
    onnx = "onnx"


class ExportDirection(str, Enum):
    a2b = "a2b"
    b2a = "b2a"
    both = "both"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # unreachable


@app.command()
def export(
    source: Annotated[str, typer.Argument(help="MODEL: registered name, Hub repo id, model folder, training run "
                                              "or checkpoint, official PyTorch *_params_*.pt or TF checkpoint.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write (must be empty or absent).")],
    format: Annotated[ExportFormat, typer.Option("--format", help="Weights format.")] = ExportFormat.safetensors,
    direction: Annotated[ExportDirection, typer.Option("--direction", help="Generator(s) to export.")] = (
        ExportDirection.both),
    half: Annotated[bool, typer.Option("--half", help="Store weights in float16 (half the size; loaders compute "
                                                      "in float32).")] = False,
    push_to_hub: Annotated[str | None, typer.Option("--push-to-hub", metavar="REPO_ID", help="Then upload the "
                                                    "folder to this Hub repo (created if missing).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the Hub repo private.")] = False,
    branch: Annotated[str | None, typer.Option("--branch", help="Hub branch to push to (created if missing; "
                                                                "default main).")] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Revision of a Hub SOURCE.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output folder.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Export a model's generators to a model folder (safetensors or ONNX), optionally pushed to the Hub."""
    from .export import export_model, parse_directions

    if quiet or as_json:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    try:
        result = export_model(
            source, output, format=format.value, directions=parse_directions(direction.value), half=half,
            overwrite=overwrite, revision=revision, repo_id=push_to_hub, private=private, branch=branch,
            show_progress=not (quiet or as_json),
        )
    except UserError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    if quiet:
        return
    table = Table("file", "size")
    for name, size in result.files.items():
        table.add_row(name, _size(size))
    console.print(f"Wrote {result.folder} ({result.format}, weights in {result.weights_dtype}):", highlight=False)
    console.print(table)
    if result.opset is not None:
        console.print(f"ONNX opset {result.opset}; input 'input' with a dynamic batch size; outputs "
                      "'image', 'cam_logit', 'heatmap'.")
    if result.pushed:
        console.print(f"Pushed to {result.pushed['repo_id']} ({result.pushed['branch']}): "
                      f"{result.pushed['commit_url']}")
    console.print(f"Done in {result.seconds:.1f} s.")


def main() -> None:
    app()
