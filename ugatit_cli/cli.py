"""The ``ugatit`` command line: thin Typer commands over the library functions."""

import json
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from .errors import UserError

console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)  # soft_wrap: a message stays one line


def print_error(message: str) -> None:
    """One red line on stderr."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")


class _UserErrorsAsExitCodes(TyperGroup):
    """Every command's :class:`UserError` becomes one red line on stderr and its ``exit_code`` (2: usage,
    1: bad input), never a traceback; commands need no handling of their own."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(cls=_UserErrorsAsExitCodes, add_completion=False, no_args_is_help=True,
                  help="U-GAT-IT image-to-image translation.")


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


@app.command()
def translate(
    inputs: Annotated[list[str], typer.Argument(
        metavar="INPUT", help="Image files, folders (recursive; relative paths kept) or glob patterns.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Registered name, Hub repo id (user/name), model "
                                       "folder, training run or checkpoint, official *_params_*.pt or TF checkpoint.")],
    direction: Annotated[str, typer.Option(help="a2b or b2a (for selfie2anime, a2b is selfie -> anime).")] = "a2b",
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs.")] = Path("translated"),
    size: Annotated[int | None, typer.Option(help="Square size the model runs at (light models: any multiple "
                                             "of 4).", show_default="the model's training size")] = None,
    keep_size: Annotated[bool, typer.Option("--keep-size", help="Scale each result back to its input's size.")] = False,
    batch_size: Annotated[int | None, typer.Option(help="Images per forward pass.",
                                                   show_default="1 on a CPU, where it is fastest; 8 on a GPU")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, bf16 or fp16 (autocast; fp16 needs a GPU).")] = "fp32",
    heatmap: Annotated[bool, typer.Option("--heatmap", help="Also write the attention map as NAME_heatmap.png.")
                       ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (else they are "
                                            "skipped).")] = False,
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit) of MODEL.")] = None,
    workers: Annotated[int | None, typer.Option(help="Threads that decode and encode images.",
                                                show_default="the number of CPUs, at most 8")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
) -> None:
    """Translate images: one PNG per input under --output. Exit 0: all done; 1: some inputs failed; 2: usage error."""
    from .translation import translate as run_translation

    report = run_translation(
        inputs, model, output=output, direction=direction, size=size, keep_size=keep_size, batch_size=batch_size,
        device=device, precision=precision, heatmap=heatmap, overwrite=overwrite, revision=revision,
        workers=workers, progress=not (quiet or as_json),
    )
    for failure in report.failed:
        print_error(f"{failure.source}: {failure.reason}")
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    elif not quiet:
        skipped = f", {len(report.skipped)} skipped (exist; --overwrite replaces them)" if report.skipped else ""
        failed = f", {len(report.failed)} failed" if report.failed else ""
        images = "image" if len(report.done) == 1 else "images"
        err_console.print(f"Translated {len(report.done)} {images}{skipped}{failed} in {report.seconds:.1f} s "
                          f"({report.images_per_second:.2f} images/s) into {escape(str(report.output_dir))}")
    raise typer.Exit(report.exit_code)


def main() -> None:
    app()
