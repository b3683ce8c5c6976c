"""The ``ugatit`` command line: thin Typer commands over the library functions."""

import json
import os
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

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


def _warn_in_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


@app.command(no_args_is_help=True)
def train(
    data_dir: Annotated[str, typer.Argument(help="Folder with trainA/ and trainB/ (and testA/ testB/ for samples), "
                                            "or a Hub dataset: hf://datasets/OWNER/NAME[@REVISION].")],
    light: Annotated[bool | None, typer.Option("--light/--full", help="The light model.", show_default="full")] = None,
    size: Annotated[int | None, typer.Option(help="Image size in pixels.", show_default="256")] = None,
    ch: Annotated[int | None, typer.Option(help="Base channel count.", show_default="64")] = None,
    n_res: Annotated[int | None, typer.Option("--n-res", help="Residual blocks.", show_default="4")] = None,
    iterations: Annotated[int | None, typer.Option(help="Total training iterations.", show_default="1000000")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Images per domain per iteration (per process under torchrun).", show_default="1")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate.", show_default="0.0001")] = None,
    weight_decay: Annotated[float | None, typer.Option(
        "--weight-decay", help="Adam's L2 term.", show_default="0.0001")] = None,
    adv_weight: Annotated[float | None, typer.Option("--adv-weight", show_default="1")] = None,
    cycle_weight: Annotated[float | None, typer.Option("--cycle-weight", show_default="10")] = None,
    identity_weight: Annotated[float | None, typer.Option("--identity-weight", show_default="10")] = None,
    cam_weight: Annotated[float | None, typer.Option("--cam-weight", show_default="1000")] = None,
    decay: Annotated[bool | None, typer.Option(
        "--decay/--no-decay", help="Lower the learning rate linearly to 0 over the second half.", show_default="decay",
    )] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the initial weights, data order and augmentation.", show_default="0")] = None,
    ema: Annotated[float | None, typer.Option(
        help="Keep an exponential moving average of the generators with this decay (e.g. 0.999); samples and "
             "models loaded from the run use it.")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, bf16 or fp16 (autocast).", show_default="fp32")] = None,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the networks.")] = None,
    sample_every: Annotated[int | None, typer.Option(
        "--sample-every", help="Iterations between sample grids.", show_default="1000")] = None,
    save_every: Annotated[int | None, typer.Option(
        "--save-every", help="Iterations between checkpoints.", show_default="1000")] = None,
    log_every: Annotated[int | None, typer.Option(
        "--log-every", help="Iterations between lines of log.jsonl.", show_default="10")] = None,
    keep: Annotated[int | None, typer.Option(help="Checkpoints to keep (the newest).", show_default="3")] = None,
    workers: Annotated[int | None, typer.Option(help="Data-loading worker processes.", show_default="2")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Run folder.", show_default="runs/<DATA_DIR name>")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in --output from its newest checkpoint.")] = False,
    init_from: Annotated[Path | None, typer.Option(
        "--init-from", help="Start from an official *_params_*.pt checkpoint or another run's newest checkpoint.",
    )] = None,
    device: Annotated[str, typer.Option(
        help="auto, cpu, cuda, cuda:N or mps (torchrun: one GPU per process).")] = "auto",
    split: Annotated[str | None, typer.Option(help="Hub dataset: the split to train on.",
                                              show_default="train")] = None,
    domain_column: Annotated[list[str] | None, typer.Option(
        "--domain-column", help="Hub dataset: an image column per domain (repeat: A, then B), or "
        "LABEL=VALUE_A,VALUE_B (a label column and its value of each domain).",
        show_default="inferred")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
) -> None:
    """Train a U-GAT-IT model; checkpoints, samples and logs go to the run folder.

    With --resume, settings not given are the run's own. Ctrl-C saves a checkpoint and stops. Run under
    `torchrun --nproc_per_node=N -m ugatit_cli train ...` for several GPUs (or CPU processes).
    """
    from .train.run import train as run_training

    given = {"light": light, "size": size, "ch": ch, "n_res": n_res, "iterations": iterations,
             "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "adv_weight": adv_weight,
             "cycle_weight": cycle_weight, "identity_weight": identity_weight, "cam_weight": cam_weight,
             "decay": decay, "seed": seed, "ema": ema, "precision": precision, "compile": compile,
             "sample_every": sample_every, "save_every": save_every, "keep_checkpoints": keep, "workers": workers,
             "log_every": log_every}
    settings = {key: value for key, value in given.items() if value is not None}
    main_rank = os.environ.get("RANK", "0") == "0"
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warn_in_one_line
            summary = run_training(data_dir, settings, output=output, resume=resume, init_from=init_from,
                                   device=device, progress=not quiet and main_rank, split=split,
                                   domain_columns=domain_column or ())
    except UserError as exc:
        if main_rank:  # every rank fails alike; one message is enough
            print_error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    if as_json and main_rank:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    if summary.interrupted:
        raise typer.Exit(130)


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
    result = export_model(
        source, output, format=format.value, directions=parse_directions(direction.value), half=half,
        overwrite=overwrite, revision=revision, repo_id=push_to_hub, private=private, branch=branch,
        show_progress=not (quiet or as_json),
    )
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
    batch_size: Annotated[int | None, typer.Option(min=1, help="Images per batch, translation and features "
                                                   "[default: translate's per-device choice; 16 for features].")
                          ] = None,
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

    options = dict(kid=kid, fid=fid, inception_weights=inception_weights, device=device, batch_size=batch_size,
                   kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, cache=cache,
                   progress=not quiet, extractor=extractor_from_spec(feature_extractor) if feature_extractor else None)
    if data_dir is not None:
        report = evaluate_model(data_dir, model, direction=direction, revision=revision, **options)
    else:
        report = evaluate_folders(real, fake, **options)
    for problem in report.failures:
        print_error(f"{problem.path}: {problem.reason}")
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console.print(_evaluation_table(report))
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
    for c in report.comparisons:
        row = [c.direction or "-", c.fake, c.real, f"{c.fake_images}/{c.real_images}"]
        if measured_kid:
            row.append(f"{100 * c.kid_mean:.2f} ± {100 * c.kid_std:.2f}")
        if measured_fid:
            row.append(f"{c.fid:.2f}")
        table.add_row(*row)
    table.caption = f"KID: {report.kid_subsets} subsets, seed {report.seed}; features: {report.extractor}"
    return table


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
    console.print("--model also takes a Hub repo id (user/name), a model folder, a training run folder, "
                  "an official PyTorch checkpoint (*_params_*.pt) or an official TensorFlow checkpoint folder.")


from .cli_demo import demo  # noqa: E402

app.command()(demo)


def main() -> None:
    app()
