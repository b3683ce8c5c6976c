"""``ugatit demo``: a local web page that translates a photo (upload or webcam) with one of a few models.

:func:`build_app` returns a ``gradio.Blocks`` (Gradio is the ecosystem's standard for model demos and what
a Hugging Face Space runs); :func:`launch_demo` serves it. Every request goes through
:func:`ugatit_cli.translation.translate`, the code behind ``ugatit translate``, with the generator that was
loaded when the app was built, so a result is byte-for-byte the PNG that ``ugatit translate`` writes for
the same photo: same decoding (EXIF orientation, transparency on white, Pillow's decompression-bomb
limit), same bilinear resize, same rounding.

- Models load once per process (every direction a model has; a direction that cannot be loaded is left
  out with its reason shown) and are shared by all requests. Requests go through Gradio's queue one at a
  time (``concurrency_limit=1``): the model is one set of weights, and on a CPU one image at a time with
  all the threads is fastest; two browsers at once simply queue.
- Files: Gradio's uploads, its cache and our per-request outputs all live in one temporary folder
  (``GRADIO_TEMP_DIR`` is pointed there before any component exists), removed when the process exits.
  Uploads larger than ``max_file_size`` bytes are refused while they stream in; images over Pillow's
  decompression-bomb limit are refused by the same check as ``ugatit translate``.
- It binds to 127.0.0.1 unless told otherwise; ``share=True`` asks Gradio for a public link.

Family hooks: a model's controls come from :func:`_controls_for`. U-GAT-IT has directions; TUNIT (a
reference image or a domain index), pix2pixHD (a label map as the input) and the face option of
``translate`` plug in there and in :func:`_translate_request` when those exist (see the components made
hidden in :func:`build_app`).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import gradio

#: Bytes one upload may have. A 48-megapixel phone JPEG is ~15-25 MB; PNG screenshots of 4K are ~10-30 MB.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
INSTALL_HINT = 'the demo needs Gradio: pip install "ugatit-cli[demo]"'
#: per-request output folders kept (Gradio copies the results into its cache when the request ends)
_KEPT_REQUESTS = 32


def import_gradio():
    """``gradio``, with analytics off unless the user turned them on; UserError with the install hint if absent."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return gradio


@dataclass
class DemoModel:
    """One ``--model``: its label in the page, its source, and the generators loaded (direction -> Generator)."""

    label: str
    source: str
    generators: dict[str, Any]
    unavailable: dict[str, str] = field(default_factory=dict)  # direction -> why it could not be loaded
    family: str = "ugatit"


def load_models(models: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike], device: str = "auto",
                revision: str | None = None) -> dict[str, DemoModel]:
    """Load every direction of each model once, on ``device``, in eval mode.

    ``models`` is a list of MODEL sources (labelled by the source text) or a mapping label -> source. A
    direction that a model does not have (a one-direction export) is left out; a model with no loadable
    direction raises the first direction's :class:`UserError`.
    """
    from .devices import select_device
    from .hub import DIRECTIONS
    from .loading import resolve_model

    pairs = list(models.items()) if isinstance(models, Mapping) else [(str(m), m) for m in models]
    if not pairs:
        raise UserError("no model given: pass --model at least once")
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        raise UserError(f"a model is given twice: {', '.join(labels)}")
    target = select_device(device)
    loaded: dict[str, DemoModel] = {}
    for label, source in pairs:
        generators, unavailable, first_error = {}, {}, None
        for direction in DIRECTIONS:
            try:
                generator = resolve_model(source, (direction,), revision).generators[direction]
            except UserError as exc:
                unavailable[direction] = str(exc)
                first_error = first_error or exc
                continue
            generators[direction] = generator.to(target).eval()
        if not generators:
            raise first_error
        loaded[label] = DemoModel(label, str(source), generators, unavailable)
    return loaded


def _controls_for(model: DemoModel) -> dict[str, Any]:
    """What the page shows for ``model``: the hook where families plug their inputs in.

    U-GAT-IT: the directions it has. TUNIT will show ``reference`` (an image) and ``domain`` (an index)
    instead of directions; pix2pixHD takes a label map as the input image and has no direction; the face
    option of ``translate`` shows ``faces`` for every family.
    """
    return {"directions": list(model.generators), "reference": False, "domain": False, "label_map": False,
            "faces": False}


@dataclass
class _Workspace:
    """The one temporary folder of an app: Gradio's uploads and cache, and our per-request outputs."""

    root: Path
    _recent: deque = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls) -> _Workspace:
        root = Path(tempfile.mkdtemp(prefix="ugatit-demo-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        return cls(root)

    def request_folder(self) -> Path:
        """A fresh folder for one request's outputs; the oldest beyond the last few are removed."""
        folder = Path(tempfile.mkdtemp(prefix="request-", dir=self.root))
        with self._lock:
            self._recent.append(folder)
            while len(self._recent) > _KEPT_REQUESTS:
                shutil.rmtree(self._recent.popleft(), ignore_errors=True)
        return folder

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _translate_request(model: DemoModel, image_path: str | None, direction: str | None, *, device: str,
                       precision: str, workspace: _Workspace, max_file_size: int) -> tuple[str, str]:
    """One request: the uploaded file through ``translate`` -> (translation PNG path, heatmap PNG path).

    Raises :class:`UserError` with the reason for anything the user can fix (no image, an unreadable or
    oversized one, a direction the model lacks).
    """
    from .translation import translate

    if not image_path:
        raise UserError("upload a photo or take one with the webcam first")
    path = Path(image_path)
    if not path.resolve().is_relative_to(workspace.root.resolve()):  # only files Gradio received
        raise UserError("the image must be uploaded through the page")
    if path.stat().st_size > max_file_size:
        raise UserError(f"{path.name}: {path.stat().st_size} bytes; uploads are limited to {max_file_size} bytes")
    direction = direction or next(iter(model.generators))
    if direction not in model.generators:
        why = model.unavailable.get(direction, "not loaded")
        raise UserError(f"{model.label} cannot translate {direction}: {why}")
    out = workspace.request_folder()
    report = translate([path], model.generators[direction], output=out, device=device, precision=precision,
                       heatmap=True, progress=False, workers=1)
    if report.failed:
        failure = report.failed[0]
        raise UserError(f"{Path(failure.source).name}: {failure.reason}")
    done = report.done[0]
    return str(done.output), str(done.heatmap)


def build_app(models: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] | Mapping[str, DemoModel],
              *, device: str = "auto", precision: str = "fp32", revision: str | None = None,
              max_file_size: int = MAX_UPLOAD_BYTES, title: str = "U-GAT-IT translation") -> gradio.Blocks:
    """The demo page for ``models`` (MODEL sources, a mapping label -> source, or :func:`load_models`' result).

    Models load now, once. The returned Blocks has its queue on; ``.launch()`` serves it (its defaults
    here: 127.0.0.1, uploads limited to ``max_file_size`` bytes, no external fonts). The API endpoint is
    ``/translate`` (``image``, ``model``, ``direction`` -> translation PNG, heatmap PNG, download file), the
    one ``gradio_client`` calls. ``device`` and ``precision`` are those of ``ugatit translate``.
    Raises :class:`UserError` for a model that cannot be loaded, an unknown device or precision, or a
    missing Gradio.
    """
    from .devices import check_precision, select_device

    if importlib.util.find_spec("gradio") is None:  # before minutes of model loading
        raise UserError(INSTALL_HINT)
    check_precision(precision, select_device(device))
    if isinstance(models, Mapping) and models and all(isinstance(m, DemoModel) for m in models.values()):
        loaded: dict[str, DemoModel] = dict(models)  # type: ignore[arg-type]
    else:
        loaded = load_models(models, device, revision)  # type: ignore[arg-type]
    workspace = _Workspace.create()
    # Every file Gradio writes (uploads, webcam shots, its cache of results, its own folders) goes under the
    # workspace: Gradio reads this when it is imported, when components are created and when it serves.
    os.environ["GRADIO_TEMP_DIR"] = str(workspace.root)
    gr = import_gradio()

    labels = list(loaded)
    first = loaded[labels[0]]
    first_controls = _controls_for(first)
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# {title}\nDrop a photo (or use the webcam), pick a model and a direction, then "
                    "**Translate**. The result is the PNG `ugatit translate` writes for the same file.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(sources=["upload", "webcam"], type="filepath", label="Photo", elem_id="ugatit-input")
                image.preprocess = _upload_path(image.preprocess)
                model = gr.Dropdown(labels, value=labels[0], label="Model", elem_id="ugatit-model")
                direction = gr.Radio(first_controls["directions"], value=first_controls["directions"][0],
                                     label="Direction", elem_id="ugatit-direction")
                # Family hooks (hidden until a model of that family is picked): TUNIT's reference image
                # and domain, pix2pixHD's label map, translate's face option.
                reference = gr.Image(type="filepath", label="Reference image (TUNIT)", visible=False)
                domain = gr.Number(label="Domain (TUNIT)", precision=0, visible=False)
                label_map = gr.Image(type="filepath", label="Label map (pix2pixHD)", visible=False)
                faces = gr.Checkbox(label="Translate the faces in the photo", visible=False)
                notes = gr.Markdown(_notes(first), elem_id="ugatit-notes")
                run = gr.Button("Translate", variant="primary", elem_id="ugatit-translate")
            with gr.Column():
                result = gr.Image(type="filepath", format="png", label="Translation", interactive=False,
                                  elem_id="ugatit-output")
                heatmap = gr.Image(type="filepath", format="png", label="Attention heatmap", interactive=False,
                                   elem_id="ugatit-heatmap")
                download = gr.DownloadButton("Download PNG", elem_id="ugatit-download")

        def pick_model(label: str):
            controls = _controls_for(loaded[label])
            directions = controls["directions"]
            return (gr.update(choices=directions, value=directions[0] if directions else None,
                              visible=bool(directions)),
                    gr.update(visible=controls["reference"]), gr.update(visible=controls["domain"]),
                    gr.update(visible=controls["label_map"]), gr.update(visible=controls["faces"]),
                    _notes(loaded[label]))

        def translate_image(image: str | None, model: str, direction: str | None):
            if model not in loaded:
                raise gr.Error(f"unknown model {model!r}; one of: {', '.join(labels)}")
            try:
                output, heat = _translate_request(loaded[model], image, direction, device=device,
                                                  precision=precision, workspace=workspace,
                                                  max_file_size=max_file_size)
            except UserError as exc:
                raise gr.Error(str(exc)) from None
            return output, heat, output

        model.change(pick_model, model, [direction, reference, domain, label_map, faces, notes],
                     api_name=False)
        run.click(translate_image, [image, model, direction], [result, heatmap, download],
                  api_name="translate", concurrency_limit=1)
    app.queue()
    app.ugatit_models = loaded
    app.ugatit_workspace = workspace
    _launch_defaults(app, gr, max_file_size)
    return app


def _upload_path(preprocess):
    """An image input's preprocess that hands our function the uploaded file untouched (Gradio would open it
    with Pillow first, outside our checks), so that ``translate`` decodes it exactly as from the disk. (An
    instance attribute: a subclass of a Gradio component makes Gradio write a .pyi file beside this module.)"""

    def keep_path(payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return preprocess(payload)

    return keep_path


def _notes(model: DemoModel) -> str:
    if not model.unavailable:
        return ""
    return "\n".join(f"*{direction} unavailable: {why}*" for direction, why in model.unavailable.items())


def _launch_defaults(app: gradio.Blocks, gr: Any, max_file_size: int) -> None:
    """Make ``app.launch()`` bind 127.0.0.1, limit uploads and use system fonts unless told otherwise, so
    that a Space's ``build_app([...]).launch()`` gets the same limits as ``ugatit demo``."""
    launch = app.launch
    fonts = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no request to Google Fonts

    def launch_with_defaults(*args: Any, **kwargs: Any):
        kwargs.setdefault("max_file_size", max_file_size)
        kwargs.setdefault("theme", fonts)
        if not args:
            kwargs.setdefault("server_name", os.environ.get("GRADIO_SERVER_NAME", DEFAULT_HOST))
        return launch(*args, **kwargs)

    app.launch = launch_with_defaults


def launch_demo(models: Sequence[str | os.PathLike], *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                share: bool = False, device: str = "auto", precision: str = "fp32", revision: str | None = None,
                max_file_size: int = MAX_UPLOAD_BYTES, block: bool = True) -> gradio.Blocks:
    """Build and serve the demo on ``host:port`` (``share``: also a public gradio.live link). With ``block``
    it serves until Ctrl-C or SIGTERM, then removes its temporary folder."""
    if not 0 < port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    app = build_app(models, device=device, precision=precision, revision=revision, max_file_size=max_file_size)
    try:
        app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=False,
                   show_error=True)
    except OSError as exc:
        app.ugatit_workspace.remove()
        raise UserError(f"cannot serve on {host}:{port} ({exc})") from None
    if block:
        try:
            _wait_for_stop()
        finally:
            app.close()
            app.ugatit_workspace.remove()
    return app


def _wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM."""
    import signal

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
