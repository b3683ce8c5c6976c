"""``ugatit export``: any MODEL to a model folder (safetensors or ONNX), optionally pushed to the Hub."""

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .app import FAMILIES, app, console, family_help
from .options import translate_options, with_options

GENERATED = translate_options(FAMILIES, "export_options")


class ExportFormat(str, Enum):
    safetensors = "safetensors"
    onnx = "onnx"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # unreachable


def export(
    source: Annotated[str, typer.Argument(help="MODEL: registered name, Hub repo id, model folder, training run "
                                              f"or checkpoint ({family_help('model')}).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write (must be empty or absent).")],
    format: Annotated[ExportFormat, typer.Option("--format", help="Weights format.")] = ExportFormat.safetensors,
    direction: Annotated[str, typer.Option("--direction", help="Network(s) to export: one direction of the "
                                           "family, or both.")] = "both",
    half: Annotated[bool, typer.Option("--half", help="Store weights in float16 (half the size; loaders compute "
                                                      "in float32).")] = False,
    quantize: Annotated[str | None, typer.Option("--quantize", metavar="int8", help="ONNX only: int8 graphs "
                                                 "(ONNX Runtime static quantization) for translate's onnxruntime "
                                                 "backend.")] = None,
    calibration: Annotated[Path | None, typer.Option("--calibration", metavar="PHOTOS", help="Folder of real "
                                                     "inputs of the source domain to calibrate --quantize int8.")
                           ] = None,
    push_to_hub: Annotated[str | None, typer.Option("--push-to-hub", metavar="REPO_ID", help="Then upload the "
                                                    "folder to this Hub repo (created if missing).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the Hub repo private.")] = False,
    branch: Annotated[str | None, typer.Option("--branch", help="Hub branch to push to (created if missing; "
                                                                "default main).")] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Revision of a Hub SOURCE.")] = None,
    size: Annotated[int | None, typer.Option(
        "--size", help="Training size of a model whose checkpoint does not store it (official light U-GAT-IT "
                       "checkpoints; otherwise 256 is assumed and marked so).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output folder this tool "
                                            "wrote (never the source, a folder holding it, or one with other "
                                            "files).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    options: dict[str, Any] | None = None,
) -> None:
    """Export a model's generators to a model folder (safetensors or ONNX), optionally pushed to the Hub."""
    from ..export import export_model, parse_directions

    if quiet or as_json:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    result = export_model(
        source, output, format=format.value, directions=parse_directions(direction), half=half,
        overwrite=overwrite, revision=revision, repo_id=push_to_hub, private=private, branch=branch,
        show_progress=not (quiet or as_json), size=size, quantize=quantize, calibration=calibration,
        options={name: value for name, value in (options or {}).items() if value is not None},
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    if quiet:
        return
    table = Table("file", "size")
    for name, size in result.files.items():
        table.add_row(name, _size(size))
    stored = "int8 (QDQ)" if result.quantize else result.weights_dtype
    console.print(f"Wrote {result.folder} ({result.format}, weights in {stored}):", highlight=False)
    console.print(table)
    if result.onnx:
        console.print(f"ONNX opset {result.opset}; inputs {', '.join(map(repr, result.onnx['inputs']))} with a "
                      f"dynamic batch size; outputs {', '.join(map(repr, result.onnx['outputs']))}.")
    if result.pushed:
        console.print(f"Pushed to {result.pushed['repo_id']} ({result.pushed['branch']}): "
                      f"{result.pushed['commit_url']}")
    console.print(f"Done in {result.seconds:.1f} s.")


app.command("export")(with_options(export, GENERATED))
