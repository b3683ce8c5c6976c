"""The ``ugatit`` command line: thin Typer commands over the library functions."""

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

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


def _warn_in_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


@app.command(no_args_is_help=True)
def train(
    data_dir: Annotated[Path, typer.Argument(help="Folder with trainA/ and trainB/ (and testA/ testB/ for samples).")],
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
) -> None:
    """Train a U-GAT-IT model; checkpoints, samples and logs go to the run folder.

    With --resume, settings not given are the run's own. Ctrl-C saves a checkpoint and stops. Run under
    `torchrun --nproc_per_node=N -m ugatit_cli train ...` for several GPUs (or CPU processes).
    """
    from .errors import UserError
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
                                   device=device, progress=not quiet and main_rank)
    except UserError as exc:
        if main_rank:
            typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json and main_rank:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    if summary.interrupted:
        raise typer.Exit(130)


def main() -> None:
    app()
