"""``ugatit demo``: the command; the page itself is :mod:`ugatit_cli.demo` (Gradio is imported only when it runs)."""

from typing import Annotated

import typer

from .app import app, family_help


def demo(
    model: Annotated[list[str], typer.Option(
        "--model", "-m", help="MODEL, any form translate takes (registered name, Hub repo id, model folder, "
        f"training run or checkpoint; {family_help('model')}); repeat it to offer several models.")],
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 makes the page reachable from other "
                                      "machines.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 7860,
    share: Annotated[bool, typer.Option("--share", help="Also ask Gradio for a public *.gradio.live link.")] = False,
    device: Annotated[str, typer.Option(help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, bf16 or fp16 (autocast; fp16 needs a GPU).")] = "fp32",
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit) of the models.")] = None,
) -> None:
    """Serve a web page that translates an uploaded or webcam image; the same output as translate. Ctrl-C stops it.

    Needs the demo extra: pip install "ugatit-cli\\[demo]" (Gradio).
    """
    from ..demo import launch_demo

    launch_demo(model, host=host, port=port, share=share, device=device, precision=precision, revision=revision)


app.command("demo", no_args_is_help=True)(demo)
