"""``ugatit eval``: KID/FID of a model's translations (what the family compares), or of two folders."""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .app import app, console, err_console, family_help, print_error, results_note


@app.command("eval")
def eval_command(
    data_dir: Annotated[Path | None, typer.Argument(
        help=f"Dataset folder in the official layout ({family_help('eval_data')}).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="MODEL to translate the test images with.")] = None,
    kid: Annotated[bool, typer.Option("--kid", help="Kernel Inception Distance (the paper's metric, x100; "
                                                    "measured when neither --kid nor --fid is given).")] = False,
    fid: Annotated[bool, typer.Option("--fid", help="Frechet Inception Distance.")] = False,
    direction: Annotated[str | None, typer.Option(
        help=f"For families with directions ({family_help('eval_direction')}).",
        show_default="the family's first")] = None,
    real: Annotated[Path | None, typer.Option("--real", help="Folder of real images (instead of DATA_DIR).")] = None,
    fake: Annotated[Path | None, typer.Option("--fake", help="Folder of generated images to compare with.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit) of MODEL.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Images per batch, translation and features.",
        show_default="translate's per-device choice; 16 for features")] = None,
    inception_weights: Annotated[Path | None, typer.Option(
        help="Local copy of torch-fidelity's FID Inception weights (.pth), for machines without internet.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the KID subsets (torch-fidelity's default is 2020).")] = 0,
    kid_subsets: Annotated[int, typer.Option(min=1, help="Number of KID subsets.")] = 100,
    kid_subset_size: Annotated[int, typer.Option(
        min=2, help="Images per KID subset (fewer when a folder has fewer).")] = 1000,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse features of unchanged folders.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    backend: Annotated[str, typer.Option(help="How DATA_DIR's test images are translated: torch, onnxruntime or "
                                         "auto, as in translate.")] = "auto",
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
        kid = True  # the paper's metric, measured when nothing else is asked for
    from ..evaluate.evaluation import evaluate_folders, evaluate_model
    from ..evaluate.features import extractor_from_spec

    options = dict(kid=kid, fid=fid, inception_weights=inception_weights, device=device, batch_size=batch_size,
                   kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, cache=cache,
                   progress=not quiet, extractor=extractor_from_spec(feature_extractor) if feature_extractor else None)
    if data_dir is not None:
        report = evaluate_model(data_dir, model, direction=direction, revision=revision, backend=backend, **options)
    else:
        report = evaluate_folders(real, fake, **options)
    for problem in report.failures:
        print_error(f"{problem.path}: {problem.reason}")
    if report.left_out:
        err_console.print(f"note: {results_note(report.left_out)}", markup=False)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console.print(_evaluation_table(report))
        for name, value in report.scores.items():
            console.print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}", highlight=False)
    if report.failures:
        err_console.print(f"{len(report.failures)} image(s) could not be read and were left out of the measurement")
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
    paired = any(c.paired for c in report.comparisons)
    if paired:
        table.add_column("PSNR dB\nmean ± std", justify="right", no_wrap=True)
        table.add_column("SSIM\nmean ± std", justify="right", no_wrap=True)
    for c in report.comparisons:
        row = [c.direction or "-", c.fake, c.real, f"{c.fake_images}/{c.real_images}"]
        if measured_kid:
            row.append(f"{100 * c.kid_mean:.2f} ± {100 * c.kid_std:.2f}")
        if measured_fid:
            row.append(f"{c.fid:.2f}")
        if paired:
            p = c.paired or {}
            row += [f"{p['psnr_mean']:.2f} ± {p['psnr_std']:.2f}" if p else "-",
                    f"{p['ssim_mean']:.3f} ± {p['ssim_std']:.3f}" if p else "-"]
        table.add_row(*row)
    table.caption = f"KID: {report.kid_subsets} subsets, seed {report.seed}; features: {report.extractor}"
    return table
