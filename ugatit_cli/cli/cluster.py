"""``ugatit cluster``: each image's (pseudo-)domain under a model that sorts images into domains."""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .app import app, err_console, print_error


@app.command("cluster")
def cluster_command(
    inputs: Annotated[list[str], typer.Argument(
        metavar="INPUT", help="Image files, folders (recursive; relative paths kept) or glob patterns.")],
    model: Annotated[str, typer.Option("--model", "-m", help="MODEL that sorts the images into its domains "
                                       "(model folder, training run, official checkpoint, Hub repo id).")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Folder for domains.csv (or .json) and, with --link/--copy, domain_<k>/ folders.")
                      ] = None,
    link: Annotated[bool, typer.Option("--link", help="Put a symbolic link to each image in "
                                       "OUTPUT/domain_<k>/.")] = False,
    copy: Annotated[bool, typer.Option("--copy", help="Put a copy of each image in OUTPUT/domain_<k>/.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout (and domains.json) instead of CSV.")
                       ] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout and domains.csv: image,domain,probability "
                                         "(the default).")] = False,
    size: Annotated[int | None, typer.Option(help="Square size the model runs at.",
                                             show_default="the model's training size")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per forward pass.", show_default="16")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")] = "auto",
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit) of MODEL.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing table and links/copies.")
                         ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")] = False,
) -> None:
    """Sort images into the model's pseudo-domains: each image's domain on stdout (CSV, or JSON with --json).
    Exit 0: all done; 1: some inputs failed; 2: usage error."""
    from ..clustering import cluster
    from ..errors import UserError

    if link and copy:
        raise UserError("give --link or --copy, not both")
    if as_json and as_csv:
        raise UserError("give --json or --csv, not both")
    report = cluster(inputs, model, output=output, place="link" if link else "copy" if copy else None,
                     table_format="json" if as_json else "csv", size=size, batch_size=batch_size, device=device,
                     revision=revision, overwrite=overwrite, progress=not quiet)
    for source, reason in report.failed:
        print_error(f"{source}: {reason}")
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(report.to_csv(), nl=False)
    if not quiet:
        sizes = ", ".join(f"{k}: {n}" for k, n in enumerate(report.counts) if n)
        where = f"; table {escape(str(report.table))}" if report.table else ""
        err_console.print(f"Sorted {len(report.assigned)} images into {sum(1 for n in report.counts if n)} of "
                          f"{report.k} domains ({sizes}){where} in {report.seconds:.1f} s")
    raise typer.Exit(report.exit_code)
