"""``ugatit translate``: options common to every family, plus each family's own (``translate_options``)."""

import json
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..core.faces import DEFAULT_FACE_SCALE, DEFAULT_MIN_FACE
from ..core.video import DEFAULT_CODEC, DEFAULT_CRF
from .app import FAMILIES, app, err_console, family_help, print_error, results_note, warn_in_one_line
from .options import translate_options, with_options

GENERATED = translate_options(FAMILIES)


class Precision(str, Enum):
    """Autocast precisions (help lists them as choices)."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    auto = "auto"


def translate(
    inputs: Annotated[list[str], typer.Argument(
        metavar="INPUT", help="Image files, folders (recursive; relative paths kept) or glob patterns.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Registered name, Hub repo id (user/name), model "
                                       f"folder, training run or checkpoint ({family_help('model')}).")],
    direction: Annotated[str | None, typer.Option(help=f"Which way to translate, for families that have "
                                                  f"directions ({family_help('direction')}).",
                                                  show_default="the family's first")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs.")] = Path("translated"),
    size: Annotated[int | None, typer.Option(help=f"Square size the model runs at ({family_help('size')}).",
                                             show_default="the model's training size")] = None,
    keep_size: Annotated[bool, typer.Option("--keep-size", help="Scale each result back to its input's size.")] = False,
    batch_size: Annotated[int | None, typer.Option(help="Images per forward pass on a GPU. A CPU runs one image "
                                                   "per pass in parallel streams, whatever this says (faster and "
                                                   "smaller there).", show_default="8")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[Precision, typer.Option(help="Autocast precision (fp16 needs a GPU); auto: bf16 on GPUs and "
                                                 "AMX CPUs, else fp32.")] = Precision.fp32,
    backend: Annotated[str, typer.Option(help="torch, onnxruntime (CPU, fp32, or an int8 export) or auto "
                                         "(onnxruntime on a CPU for fp32 when installed and worth its one-time "
                                         "export).")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the networks (slow start; for long "
                                          "runs on a GPU).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (else they are "
                                            "skipped).")] = False,
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit) of MODEL.")] = None,
    workers: Annotated[int | None, typer.Option(help="Threads that decode and encode images.",
                                                show_default="the number of CPUs, at most 8")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
    faces: Annotated[str | None, typer.Option(
        "--faces", metavar="[composite|crops]", help="Translate the faces: detect each, translate a square crop "
        "around it and paste it back (composite, the default when --faces is given alone) or write the crops "
        "(NAME_face0.png, ...). Photos without a face are skipped. Needs the faces extra.")] = None,
    face_scale: Annotated[float, typer.Option(help="Crop side / detected face box side (hair and chin included).")
                          ] = DEFAULT_FACE_SCALE,
    min_face: Annotated[int, typer.Option(help="Ignore faces narrower than this (pixels).")] = DEFAULT_MIN_FACE,
    crf: Annotated[int | None, typer.Option(help="Video quality, 0 (lossless) to 51 (worst), for H.264/H.265.",
                                            show_default=str(DEFAULT_CRF))] = None,
    codec: Annotated[str | None, typer.Option(help="Video codec: h264, hevc, mpeg4 or any FFmpeg encoder.",
                                              show_default=DEFAULT_CODEC)] = None,
    blend: Annotated[float, typer.Option(help="Video: mix this share of the previous output frame into each "
                                         "(less flicker, some ghosting; 0 is off).")] = 0.0,
    max_pixels: Annotated[int | None, typer.Option(
        "--max-pixels", help="Largest image accepted, in pixels; raise it for e.g. 100 MP camera files.",
        show_default="Pillow's decompression-bomb limit, 89,478,485")] = None,
    options: dict[str, Any] | None = None,
) -> None:
    """Translate images: one PNG per input under --output. Exit 0: all done; 1: some inputs failed; 2: usage error."""
    from ..core.sharding import shard_from_env
    from ..translation import translate as run_translation

    given = {name: value for name, value in (options or {}).items() if value is not None}
    shard = shard_from_env()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = warn_in_one_line
            report = run_translation(
                inputs, model, output=output, direction=direction, size=size, keep_size=keep_size,
                batch_size=batch_size, device=device, precision=Precision(precision).value, overwrite=overwrite,
                revision=revision, workers=workers, progress=not (quiet or as_json) and shard.is_main, faces=faces,
                face_scale=face_scale, min_face=min_face, crf=crf, codec=codec, blend=blend, max_pixels=max_pixels,
                backend=backend, compile=compile, shard=shard, **given,
            )
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: finished outputs stay, no temporary file is left
        print_error("interrupted; the results finished so far are kept, no partial file is left")
        raise typer.Exit(130) from None
    for failure in report.failed:
        print_error(f"{failure.source}: {failure.reason}")
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    elif not quiet:
        if report.model:
            err_console.print(f"Model: {escape(report.model)}")
        from ..translation import INSIDE_OUTPUT_REASON, RESULTS_FOLDER_REASON

        inside = sum(1 for s in report.skipped if s.reason == INSIDE_OUTPUT_REASON)
        results = [str(s.source) for s in report.skipped if s.reason == RESULTS_FOLDER_REASON]
        others = [s for s in report.skipped if s.reason not in (INSIDE_OUTPUT_REASON, RESULTS_FOLDER_REASON)]
        why = sorted({"exist; --overwrite replaces them" if s.reason.startswith("output exists") else s.reason
                      for s in others})
        skipped = f", {len(others)} skipped ({'; '.join(why)})" if others else ""
        skipped += f", {inside} left out (inside the output folder)" if inside else ""
        skipped += f", {escape(results_note(results))}" if results else ""
        failed = f", {len(report.failed)} failed" if report.failed else ""
        unit = "images" if all(t.output.suffix == ".png" for t in report.done) else "inputs"  # clips are inputs
        noun = unit[:-1] if len(report.done) == 1 else unit
        files = sum(1 + len(t.extras) for t in report.done)  # several outputs per input: say how many files
        noun += f" ({files} files written)" if files > len(report.done) else ""
        # the rate is over the translation itself (after loading the model), and only of inputs translated
        ran = f", {report.backend} {report.precision}" if report.backend else ""
        rate = (f"; {report.images_per_second:.2f} {unit}/s over {report.translate_seconds:.1f} s of translation{ran}"
                if report.done else "")
        rank = f"[rank {report.shard.rank} of {report.shard.world_size}] " if report.shard.world_size > 1 else ""
        into = f" into {escape(str(report.output_dir))}" if report.output_dir.is_dir() else ""  # none made: no input
        err_console.print(f"{rank}Translated {len(report.done)} {noun}{skipped}{failed} in {report.seconds:.1f} s"
                          f"{rate}{into}")
    raise typer.Exit(report.exit_code)


app.command("translate")(with_options(translate, GENERATED))
