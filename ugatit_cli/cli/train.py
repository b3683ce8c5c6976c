"""``ugatit train``: the run options (RunConfig) and every family's hyper-parameters, generated from their
dataclasses (one help panel per family); ``--arch`` picks the family."""

import json
import os
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UserError
from ..families.base import DEFAULT_FAMILY
from .app import FAMILIES, app, family_help, print_error, warn_in_one_line
from .options import applies, train_options, with_options

GENERATED = train_options(FAMILIES)
_LAYOUTS = "; ".join(f"{f.name}: {f.data_layout}" for f in FAMILIES.values() if f.data_layout)


def train(
    data_dir: Annotated[str, typer.Argument(help=f"Training data ({_LAYOUTS}), or a Hugging Face Hub dataset: "
                                            "hf://datasets/OWNER/NAME[@REVISION] (needs the hub extra).")],
    arch: Annotated[str | None, typer.Option(
        "--arch", help=f"Model family: {', '.join(FAMILIES)}. A resumed run keeps its own.",
        show_default=DEFAULT_FAMILY)] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Run folder.", show_default="runs/<DATA_DIR name>")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in --output from its newest checkpoint.")] = False,
    init_from: Annotated[Path | None, typer.Option(
        "--init-from", help=f"Start from an official checkpoint ({family_help('init_from')}) or another run's "
                            "newest checkpoint.")] = None,
    device: Annotated[str, typer.Option(
        help="auto, cpu, cuda, cuda:N or mps (torchrun: one GPU per process).")] = "auto",
    split: Annotated[str | None, typer.Option(help="Hub dataset: the split to train on (its test split gives the "
                                              "sample images).", show_default="train")] = None,
    domain_column: Annotated[list[str] | None, typer.Option(
        "--domain-column", help="Hub dataset: the image column of each role, repeated in the family's order (U-GAT-IT: "
        "A then B; pix2pixHD: label map, photo[, instance map]), or LABEL=VALUE_A,VALUE_B (a label column and "
        "the value of each domain).", show_default="inferred from the column names")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
    options: dict[str, Any] | None = None,
) -> None:
    """Train a model (U-GAT-IT unless --arch says otherwise); checkpoints, samples and logs go to the run folder.

    With --resume, settings not given are the run's own. Ctrl-C saves a checkpoint and stops. Run under
    `torchrun --nproc_per_node=N -m ugatit_cli train ...` for several GPUs (or CPU processes).
    """
    from ..families.base import get_family
    from ..train.run import train as run_training

    main_rank = os.environ.get("RANK", "0") == "0"
    settings = {key: value for key, value in (options or {}).items() if value is not None}
    try:
        if arch is not None or not resume:
            applies(GENERATED, get_family(arch), settings)
        with warnings.catch_warnings():
            warnings.showwarning = warn_in_one_line
            summary = run_training(data_dir, settings, arch=arch, output=output, resume=resume, init_from=init_from,
                                   device=device, progress=not quiet and main_rank, split=split,
                                   domain_columns=domain_column or ())
    except UserError as exc:
        if main_rank:  # every rank fails alike; one message is enough
            print_error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    if as_json and main_rank:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    elif main_rank and not quiet and summary.checkpoint is not None and not summary.interrupted:
        from rich.markup import escape

        from ..store.sources import peek_family
        from .app import err_console

        family = peek_family(summary.run_dir)  # the run's family: the options a working translate needs
        example = family.translate_example(summary.checkpoint) if family is not None else ""
        ema = " (its EMA networks)" if getattr(summary.trainer, "ema", None) else ""
        err_console.print(f"Trained {summary.iteration} of {summary.iterations} iterations in {summary.seconds:.1f} s;"
                          f" newest checkpoint: {escape(str(summary.checkpoint))}. Use it{ema} with: ugatit "
                          f"translate IMAGES --model {escape(str(summary.run_dir))}{escape(example)}  (or export it: "
                          f"ugatit export "
                          f"{escape(str(summary.run_dir))} --output MODEL_DIR)", highlight=False)
    if summary.interrupted:
        raise typer.Exit(130)


app.command("train", no_args_is_help=True)(with_options(train, GENERATED))
