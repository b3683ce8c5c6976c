"""The ``ugatit`` command line: thin Typer commands over the library functions."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="U-GAT-IT image-to-image translation.")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one line per message, whatever the width


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


@app.command("eval")
def eval_command(
    data_dir: Annotated[Path | None, typer.Argument(
        help="Dataset folder in the official layout (testA/, testB/).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="MODEL to translate the test images with.")] = None,
    kid: Annotated[bool, typer.Option("--kid", help="Kernel Inception Distance (the paper's metric, x100).")] = False,
    fid: Annotated[bool, typer.Option("--fid", help="Frechet Inception Distance.")] = False,
    direction: Annotated[Literal["a2b", "b2a", "both"], typer.Option(
        help="a2b: translations of testA vs testB; b2a: of testB vs testA.")] = "a2b",
    real: Annotated[Path | None, typer.Option("--real", help="Folder of real images (instead of DATA_DIR).")] = None,
    fake: Annotated[Path | None, typer.Option("--fake", help="Folder of generated images to compare with.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit) of MODEL.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch (translation and features).")] = 16,
    inception_weights: Annotated[Path | None, typer.Option(
        help="Local copy of torch-fidelity's FID Inception weights (.pth), for machines without internet.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the KID subsets (torch-fidelity's default is 2020).")] = 0,
    kid_subsets: Annotated[int, typer.Option(min=1, help="Number of KID subsets.")] = 100,
    kid_subset_size: Annotated[int, typer.Option(
        min=2, help="Images per KID subset (fewer when a folder has fewer).")] = 1000,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse features of unchanged folders.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    feature_extractor: Annotated[str | None, typer.Option(
        hidden=True, help="module:factory of another feature extractor.")] = None,
) -> None:
    """Measure KID (and FID) of a model's translations against the real test images, or of two folders."""
    if data_dir is not None and (real is not None or fake is not None):
        raise typer.BadParameter("give either DATA_DIR with --model, or --real and --fake, not both",
                                 param_hint="DATA_DIR")
    if data_dir is None and (real is None or fake is None):
        raise typer.BadParameter("give DATA_DIR with --model, or both --real DIR and --fake DIR", param_hint="DATA_DIR")
    if data_dir is not None and model is None:
        raise typer.BadParameter("DATA_DIR needs --model MODEL to translate its test images", param_hint="--model")
    if not (kid or fid):
        raise typer.BadParameter("nothing to measure: pass --kid and/or --fid", param_hint="--kid/--fid")
    from .evaluation import evaluate_folders, evaluate_model
    from .features import extractor_from_spec

    with _user_errors():
        options = dict(kid=kid, fid=fid, inception_weights=inception_weights, device=device, batch_size=batch_size,
                       kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, cache=cache,
                       progress=not quiet,
                       extractor=extractor_from_spec(feature_extractor) if feature_extractor else None)
        if data_dir is not None:
            report = evaluate_model(data_dir, model, direction=direction, revision=revision, **options)
        else:
            report = evaluate_folders(real, fake, **options)
    for problem in report.failures:
        err_console.print(f"skipped {problem.path}: {problem.reason}", markup=False, highlight=False)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console.print(_evaluation_table(report))
    if report.failures:
        err_console.print(f"{len(report.failures)} image(s) could not be read and were left out", highlight=False)
        raise typer.Exit(1)


def _evaluation_table(report) -> Table:
    table = Table(title="Evaluation")
    table.add_column("direction", no_wrap=True)
    table.add_column("fake", overflow="fold")
    table.add_column("real", overflow="fold")
    table.add_column("images\nfake/real", justify="right", no_wrap=True)
    measured_kid = any(c.kid_mean is not None for c in report.comparisons)
    measured_fid = any(c.fid is not None for c in report.comparisons)
    if measured_kid:
        table.add_column("KID x100\nmean ± std", justify="right", no_wrap=True)
    if measured_fid:
        table.add_column("FID", justify="right", no_wrap=True)
    for c in report.comparisons:
        row = [c.direction or "-", c.fake, c.real, f"{c.fake_images}/{c.real_images}"]
        if measured_kid:
            row.append(f"{100 * c.kid_mean:.2f} ± {100 * c.kid_std:.2f}")
        if measured_fid:
            row.append(f"{c.fid:.2f}")
        table.add_row(*row)
    table.caption = f"KID: {report.kid_subsets} subsets, seed {report.seed}; features: {report.extractor}"
    return table


@contextmanager
def _user_errors() -> Iterator[None]:
    """A mistake the user can fix is one line on stderr and exit status 2, never a traceback."""
    from .errors import UserError

    try:
        yield
    except UserError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def main() -> None:
    app()
