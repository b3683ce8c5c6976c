"""``ugatit demo``: a local web page that translates an uploaded (or webcam) image with one of a few models,
of any family.

:func:`build_app` returns a ``gradio.Blocks`` (Gradio is the ecosystem's standard for model demos and what a
Hugging Face Space runs); :func:`launch_demo` serves it. Every request goes through
:func:`ugatit_cli.translation.translate`, the code behind ``ugatit translate``, with the model that was loaded
when the app was built, so a result is byte for byte the PNG ``ugatit translate`` writes for the same file:
same decoding (EXIF orientation, transparency on white, Pillow's decompression-bomb limit), same resize,
same rounding.

What the page offers comes from each model's family, never from names this module knows:

- the directions (:attr:`Family.directions`; a radio button, hidden for families with one way);
- the family's translate options (:attr:`Family.translate_options`): a ``Path`` is a file upload (a
  ``per_input`` one is put in a folder under the input's name, as ``translate`` looks for it), ``int`` and
  ``float`` numbers, ``bool`` a checkbox, ``str`` a text box; shown when the picked model's family has them;
- the outputs (:meth:`Family.outputs`): a bool option that adds an output file (such as an attention map)
  is always on, and its output is shown beside the translation;
- translate's face option (``--faces``), when OpenCV (the ``faces`` extra) is installed.

Models load once per process (every network the source holds; directions whose networks are missing are
left out and named) and are shared by all requests. Requests go through Gradio's queue one at a time
(``concurrency_limit=1``): the model is one set of weights, and on a CPU one image at a time with all the
threads is fastest; two browsers at once simply queue. Gradio's uploads, its cache and our per-request
outputs all live in one temporary folder (``GRADIO_TEMP_DIR`` points there before any component exists),
removed when the app is closed or the process exits. Uploads larger than ``max_file_size`` bytes are refused
while they stream in. It binds to 127.0.0.1 unless told otherwise; ``share=True`` asks Gradio for a public
link.
"""

from __future__ import annotations

import atexit
import importlib.util
import inspect
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
from .families.base import Family, Model, OutputSpec, TranslateOption

if TYPE_CHECKING:  # pragma: no cover
    import gradio

#: Bytes one upload may have. A 48-megapixel phone JPEG is ~15-25 MB; PNG screenshots of 4K are ~10-30 MB.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
INSTALL_HINT = 'the demo needs Gradio: pip install "ugatit-cli[demo]"'
#: the API endpoint gradio_client calls (``client.predict(..., api_name="/translate")``)
API_NAME = "translate"
#: per-request folders kept (Gradio copies the results into its cache when the request ends)
_KEPT_REQUESTS = 32
#: the API's fixed parameters, before the families' options
_FIXED = ("image", "model", "direction")
FACES = "faces"


def import_gradio():
    """``gradio``, with analytics off unless the user turned them on; UserError with the install hint if absent."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return gradio


# --- the models -----------------------------------------------------------------------------------------------


@dataclass
class DemoModel:
    """One ``--model``: its label in the page, its source, the loaded :class:`Model`, the directions it can
    translate (empty for families with one way) and why the others cannot."""

    label: str
    source: str
    model: Model
    directions: list[str]
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def family(self) -> Family:
        return self.model.family


def load_models(models: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike], device: str = "auto",
                revision: str | None = None) -> dict[str, DemoModel]:
    """Load each model once (every network its source holds), on ``device``, in eval mode.

    ``models`` is a list of MODEL sources (labelled by the source text) or a mapping label -> source. A
    direction whose network the source lacks (a one-direction export) is left out and named in the page.
    UserError: no model, a label given twice, a source that cannot be loaded.
    """
    from .core.devices import select_device

    pairs = list(models.items()) if isinstance(models, Mapping) else [(str(m), m) for m in models]
    if not pairs:
        raise UserError("no model given: pass --model at least once")
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        raise UserError(f"a model is given twice: {', '.join(labels)}")
    target = select_device(device)
    loaded: dict[str, DemoModel] = {}
    for label, source in pairs:
        model = _load_every_network(source, revision)
        for net in model.nets.values():
            net.to(target).eval()
        family = model.family
        directions, unavailable = [], {}
        for direction in family.directions:
            missing = [key for key in family.keys_for((direction,)) if key not in model.nets]
            if missing:
                unavailable[direction] = f"the model holds no network {', '.join(missing)}"
            else:
                directions.append(direction)
        if family.directions and not directions:
            raise UserError(f"{source}: the model holds no network for any direction")
        loaded[label] = DemoModel(label, str(source), model, directions, unavailable)
    return loaded


def _load_every_network(source: str | os.PathLike, revision: str | None) -> Model:
    """Every network ``source`` holds: all at once, or where that fails (a Hub repo of a one-direction
    export) each direction on its own; the first error when none loads."""
    from .families.base import families
    from .store.sources import resolve_model

    try:
        return resolve_model(source, None, revision)
    except UserError as exc:
        first = exc
    model = None
    for direction in dict.fromkeys(d for family in families().values() for d in family.directions):
        try:
            part = resolve_model(source, (direction,), revision)
        except UserError:
            continue
        model = part if model is None else model.with_(nets={**model.nets, **part.nets})
    if model is None:
        raise first
    return model


def output_switches(family: Family) -> list[TranslateOption]:
    """The family's bool options that add an output file (the page always turns them on and shows the output)."""
    plain = family.outputs({})
    return [o for o in family.translate_options if o.type is bool and family.outputs({o.name: True}) != plain]


def _shown_outputs(family: Family) -> tuple[OutputSpec, ...]:
    return family.outputs({o.name: True for o in output_switches(family)})


def _inputs_of(family: Family) -> list[TranslateOption]:
    switches = {o.name for o in output_switches(family)}
    return [o for o in family.translate_options if o.name not in switches]


def _pretty(name: str) -> str:
    return name.replace("_", " ").capitalize()


# --- requests --------------------------------------------------------------------------------------------------


@dataclass
class _Workspace:
    """The one temporary folder of an app: Gradio's uploads and cache, and our per-request folders."""

    root: Path
    _recent: deque = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls) -> _Workspace:
        root = Path(tempfile.mkdtemp(prefix="ugatit-demo-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        return cls(root)

    def request_folder(self) -> Path:
        """A fresh folder for one request; the oldest beyond the last few are removed."""
        folder = Path(tempfile.mkdtemp(prefix="request-", dir=self.root))
        with self._lock:
            self._recent.append(folder)
            while len(self._recent) > _KEPT_REQUESTS:
                shutil.rmtree(self._recent.popleft(), ignore_errors=True)
        return folder

    def holds(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.root.resolve())

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _uploaded(path: str | None, what: str, workspace: _Workspace, max_file_size: int) -> Path:
    if not path:
        raise UserError(f"upload {what} first")
    file = Path(path)
    if not workspace.holds(file):  # only files Gradio received
        raise UserError(f"{what} must be uploaded through the page")
    if file.stat().st_size > max_file_size:
        raise UserError(f"{file.name}: {file.stat().st_size} bytes; uploads are limited to {max_file_size} bytes")
    return file


def translate_request(entry: DemoModel, image: str | None, direction: str | None, options: Mapping[str, Any],
                      faces: bool, *, device: str, precision: str, workspace: _Workspace,
                      max_file_size: int) -> tuple[Path, dict[str, Path]]:
    """One request: the uploaded file through ``translate`` -> (the translation PNG, the other outputs by key).

    ``options`` are the family's translate options from the page (uploads as paths in the workspace).
    UserError with the reason for anything the user can fix: no image, an unreadable or oversized one, a
    direction the model lacks, an option the family's translator refuses.
    """
    from .translation import translate

    family = entry.family
    source = _uploaded(image, "an image", workspace, max_file_size)
    if family.directions:
        direction = direction or (entry.directions[0] if entry.directions else None)
        if direction not in entry.directions:
            why = entry.unavailable.get(direction or "", "not one of its directions")
            raise UserError(f"{entry.label} cannot translate {direction}: {why}")
    else:
        direction = None
    folder = workspace.request_folder()
    given: dict[str, Any] = {o.name: True for o in output_switches(family)}
    for option in _inputs_of(family):
        value = options.get(option.name)
        if value in (None, "") or (option.type is bool and not value):
            continue
        if option.type is Path:
            upload = _uploaded(value, _pretty(option.name).lower(), workspace, max_file_size)
            if option.per_input:  # a folder with one file named like the input
                holder = folder / f"option-{option.name}"
                holder.mkdir()
                shutil.copyfile(upload, holder / f"{source.stem}{upload.suffix.lower()}")
                value = holder
            else:
                value = upload
        elif option.type is int:
            value = int(value)
        elif option.type is float:
            value = float(value)
        given[option.name] = value
    report = translate([source], entry.model, output=folder / "out", direction=direction, device=device,
                       precision=precision, progress=False, workers=1, faces="composite" if faces else None,
                       **given)
    if report.failed:
        raise UserError(f"{source.name}: {report.failed[0].reason}")
    if not report.done:
        reason = report.skipped[0].reason if report.skipped else "nothing was written"
        raise UserError(f"{source.name}: {reason}")
    done = report.done[0]
    return done.output, dict(done.extras)


# --- the page --------------------------------------------------------------------------------------------------


def build_app(models: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] | Mapping[str, DemoModel],
              *, device: str = "auto", precision: str = "fp32", revision: str | None = None,
              max_file_size: int = MAX_UPLOAD_BYTES, title: str = "Image-to-image translation") -> gradio.Blocks:
    """The demo page for ``models`` (MODEL sources, a mapping label -> source, or :func:`load_models`' result).

    Models load now, once. The returned Blocks has its queue on; ``.launch()`` serves it (its defaults here:
    127.0.0.1, uploads limited to ``max_file_size`` bytes, no external fonts). The API endpoint is
    ``/translate``: parameters ``image``, ``model``, ``direction``, then every option of the models'
    families by its name (e.g. ``instance_maps``), then ``faces`` when OpenCV is installed; it returns the
    translation PNG, each extra output (``heatmap`` ...) and the file to download. ``device`` and
    ``precision`` are those of ``ugatit translate``. UserError: a model that cannot be loaded, an unknown
    device or precision, no Gradio.
    """
    from .core.devices import check_precision, select_device

    if importlib.util.find_spec("gradio") is None:  # before any model loading
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
    options: dict[str, TranslateOption] = {}
    outputs: dict[str, OutputSpec] = {}
    for entry in loaded.values():
        for option in _inputs_of(entry.family):
            options.setdefault(option.name, option)
        for spec in _shown_outputs(entry.family)[1:]:
            outputs.setdefault(spec.key, spec)
    with_faces = importlib.util.find_spec("cv2") is not None

    def has(entry: DemoModel, name: str) -> bool:
        return any(o.name == name for o in _inputs_of(entry.family))

    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# {title}\nUpload an image (or use the webcam), pick a model, then **Translate**. The "
                    "result is the PNG `ugatit translate` writes for the same file.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(sources=["upload", "webcam"], type="filepath", label="Input", elem_id="input")
                image.preprocess = _upload_path(image.preprocess)
                model = gr.Dropdown(labels, value=labels[0], label="Model", elem_id="model")
                direction = gr.Radio(first.directions, value=first.directions[0] if first.directions else None,
                                     label="Direction", elem_id="direction", visible=bool(first.directions))
                extra = {name: _component(gr, option, visible=has(first, name)) for name, option in options.items()}
                faces = gr.Checkbox(label="Translate each face (detect, translate a square crop, paste it back)",
                                    elem_id="faces", visible=with_faces)
                notes = gr.Markdown(_notes(first), elem_id="notes")
                run = gr.Button("Translate", variant="primary", elem_id="translate")
            with gr.Column():
                result = gr.Image(type="filepath", format="png", label="Translation", interactive=False,
                                  elem_id="output")
                shown = {key: gr.Image(type="filepath", format="png", label=_pretty(key), interactive=False,
                                       elem_id=f"output-{key}", visible=key in {s.key for s in
                                                                                _shown_outputs(first.family)})
                         for key in outputs}
                download = gr.DownloadButton("Download PNG", elem_id="download")

        def pick_model(label: str):
            entry = loaded[label]
            keys = {s.key for s in _shown_outputs(entry.family)}
            return (gr.update(choices=entry.directions, value=entry.directions[0] if entry.directions else None,
                              visible=bool(entry.directions)),
                    *[gr.update(visible=has(entry, name)) for name in extra],
                    *[gr.update(visible=key in keys) for key in shown], _notes(entry))

        def translate_image(*values: Any):
            named = dict(zip([*_FIXED, *extra, *([FACES] if with_faces else [])], values, strict=True))
            label = named["model"]
            if label not in loaded:
                raise gr.Error(f"unknown model {label!r}; one of: {', '.join(labels)}")
            entry = loaded[label]
            try:
                output, extras = translate_request(
                    entry, named["image"], named["direction"], {n: named[n] for n in extra if has(entry, n)},
                    bool(named.get(FACES)), device=device, precision=precision, workspace=workspace,
                    max_file_size=max_file_size)
            except UserError as exc:
                raise gr.Error(str(exc)) from None
            return (str(output), *[str(extras[key]) if key in extras else None for key in shown], str(output))

        # the API's parameters by name, each optional but the image (gradio_client reads this signature)
        defaults = {"image": inspect.Parameter.empty, "model": labels[0], FACES: False}
        translate_image.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults.get(n))
             for n in [*_FIXED, *extra, *([FACES] if with_faces else [])]])
        model.change(pick_model, model, [direction, *extra.values(), *shown.values(), notes], api_name=False)
        run.click(translate_image, [image, model, direction, *extra.values(), *([faces] if with_faces else [])],
                  [result, *shown.values(), download], api_name=API_NAME, concurrency_limit=1)
    app.queue()
    app.ugatit_models = loaded
    app.ugatit_workspace = workspace
    _launch_defaults(app, gr, max_file_size, workspace)
    return app


def _component(gr: Any, option: TranslateOption, visible: bool) -> Any:
    """The input of one translate option: a file upload for a path, a number, a checkbox, a text box."""
    label = _pretty(option.name)
    elem_id = f"option-{option.name}"
    if option.type is Path:
        return gr.File(label=f"{label}: {option.help}", type="filepath", elem_id=elem_id, visible=visible)
    if option.type is bool:
        return gr.Checkbox(label=label, info=option.help, elem_id=elem_id, visible=visible)
    if option.type in (int, float):
        return gr.Number(label=label, info=option.help, precision=0 if option.type is int else None, value=None,
                         elem_id=elem_id, visible=visible)
    return gr.Textbox(label=label, info=option.help, elem_id=elem_id, visible=visible)


def _upload_path(preprocess):
    """An image input's preprocess that hands our function the uploaded file untouched (Gradio would open it
    with Pillow first, outside our checks), so that ``translate`` decodes it exactly as from the disk. (An
    instance attribute: a subclass of a Gradio component makes Gradio write a .pyi file beside this module.)"""

    def keep_path(payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return preprocess(payload)

    return keep_path


def _notes(entry: DemoModel) -> str:
    return "\n".join(f"*{direction} unavailable: {why}*" for direction, why in entry.unavailable.items())


def _launch_defaults(app: gradio.Blocks, gr: Any, max_file_size: int, workspace: _Workspace) -> None:
    """Make ``app.launch()`` bind 127.0.0.1, limit uploads and use system fonts unless told otherwise, so that a
    Space's ``build_app([...]).launch()`` gets the same limits as ``ugatit demo``; ``app.close()`` also removes
    the temporary folder."""
    launch, close = app.launch, app.close
    fonts = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no request to Google Fonts

    def launch_with_defaults(*args: Any, **kwargs: Any):
        kwargs.setdefault("max_file_size", max_file_size)
        kwargs.setdefault("theme", fonts)
        if not args:
            kwargs.setdefault("server_name", os.environ.get("GRADIO_SERVER_NAME", DEFAULT_HOST))
        return launch(*args, **kwargs)

    def close_and_remove(*args: Any, **kwargs: Any):
        try:
            return close(*args, **kwargs)
        finally:
            workspace.remove()

    app.launch = launch_with_defaults
    app.close = close_and_remove


def launch_demo(models: Sequence[str | os.PathLike], *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                share: bool = False, device: str = "auto", precision: str = "fp32", revision: str | None = None,
                max_file_size: int = MAX_UPLOAD_BYTES, block: bool = True) -> gradio.Blocks:
    """Build and serve the demo on ``host:port`` (``share``: also a public gradio.live link). With ``block``
    it serves until Ctrl-C or SIGTERM, then removes its temporary folder. UserError: a port out of range or
    taken, and :func:`build_app`'s."""
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
