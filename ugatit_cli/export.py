"""``ugatit export``: any MODEL source -> a model folder (safetensors or ONNX), optionally pushed to the Hub.

Only the networks translation needs are exported (the family's ``weight_files``): ``resolve_model`` never
loads discriminators or optimizer state. What goes into an ONNX graph (module, inputs, outputs, dynamic
axes) is the family's ``onnx_io``. The folder is filled under a temporary sibling name and renamed into
place (``core.files.atomic_folder``), so an interrupted
export leaves nothing under the final name and ``--overwrite`` replaces an old folder only once the new
one is complete.

ONNX goes through ``torch.onnx.export(dynamo=True)``: it is PyTorch's default and maintained exporter (the
TorchScript one is deprecated), and ``torch.export`` fails loudly if the code specialises the batch size
we declare dynamic instead of silently baking it in. Measured with torch 2.14.1, one thread, one direction
(CPU seconds, peak RSS): the full 256 px ch 64 generator 24.8 s / 5.05 GB with it, 24.6 s / 5.77 GB with
the TorchScript exporter (``dynamo=False``, which warns DeprecationWarning); the light one 16.1 s / 0.97 GB
against 3.6 s / 1.68 GB. The TorchScript exporter records one run with real tensors; ``torch.export``
traces with symbolic shapes (what gives the guarantee above; with static shapes its decomposition pass is
3x quicker) and traces again to decompose, and that is most of a small model's export (the onnxscript
optimizer ~20%). So we keep the maintained exporter and save its work instead: networks that are one graph
with other weights (``OnnxIO.graph``: U-GAT-IT's two directions) are traced once
(``benchmarks/export.py --small --both-only``: 0.59-0.64x the CPU time of one export per direction).
"""

import contextlib
import copy
import importlib
import os
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants

from . import __version__
from .core.files import atomic_file, atomic_folder, check_output_folder, is_own_model_file
from .core.progress import progress_disabled, step_progress
from .core.safety import honour_umask, temp_prefix
from .errors import UserError
from .families.base import Direction, Model, OnnxIO
from .families.model_folder import CARD_NAME, CONFIG_NAME, ModelFolder, folder_family, hub_write_errors
from .onnx_backend import external_data_path
from .store.registry import registered_models
from .store.sources import peek_family, resolve_model

FORMATS = ("safetensors", "onnx")
ONNX_OPSET = 20  # stated, not left to the exporter's default, so an export does not change with torch versions
ONNX_EXTRA_HINT = 'pip install "ugatit-cli[onnx]"'
#: protobuf cannot hold a model over 2 GiB; larger graphs keep their weights in a ``.onnx.data`` file
ONNX_INLINE_LIMIT = 2**31 - 2**26


@dataclass
class ExportResult:
    """What ``export_model`` wrote (and pushed); ``files`` maps each file name to its size in bytes."""

    folder: Path
    format: str
    directions: tuple[str, ...]  # the network keys exported (U-GAT-IT: the directions)
    weights_dtype: str
    files: dict[str, int]
    seconds: float
    opset: int | None = None
    quantize: str | None = None
    pushed: dict[str, str] = field(default_factory=dict)  # repo_id, branch, commit_url
    onnx: dict[str, list[str]] = field(default_factory=dict)  # inputs, outputs of the ONNX graphs

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "format": self.format, "directions": list(self.directions),
                "weights_dtype": self.weights_dtype, "opset": self.opset, "quantize": self.quantize,
                "files": self.files,
                "seconds": round(self.seconds, 3), "pushed": self.pushed or None}


def parse_directions(spec: str | None, family=None) -> tuple[str, ...] | None:
    """A ``--direction`` value (one direction or ``both``; None: all) as the directions to load."""
    if spec is None or spec == "both":
        return None
    if family is not None:
        return tuple(d.name for d in Direction.parse(spec, family))
    return (spec,)


def export_model(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    format: str = "safetensors",
    directions: Sequence[str] | None = None,
    half: bool = False,
    overwrite: bool = False,
    revision: str | None = None,
    opset: int = ONNX_OPSET,
    repo_id: str | None = None,
    private: bool = False,
    branch: str | None = None,
    show_progress: bool = True,
    size: int | None = None,
    quantize: str | None = None,
    calibration: str | os.PathLike | None = None,
    options: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Load the generators of ``source`` (any MODEL) and write them to the folder ``output``.

    ``directions``: the directions whose networks to export (None: every network the model has).
    ``size`` records the training size of a model whose checkpoint does not store it
    (``Family.with_training_size``; official light U-GAT-IT checkpoints). ``half`` stores the weights in
    float16 (half the size; loaders compute in float32 again). With
    ``repo_id`` the folder is then pushed to that Hub repository (see ``push_model_folder``), and its model
    card names the repo in its usage lines.

    ``quantize="int8"`` (ONNX only) writes int8 graphs calibrated on the files in the folder ``calibration``
    (real inputs of each exported network's source domain, read as ``translate`` reads them; see
    :mod:`ugatit_cli.quantize`).

    ``options``: the family's export options (``Family.export_options``, name -> value), given to
    ``Family.complete_model`` once the model is loaded (TUNIT's ``style_data``).
    """
    if format not in FORMATS:
        raise UserError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    if directions is not None:
        directions = tuple(dict.fromkeys(directions))
        if not directions:
            raise UserError("no direction to export")
        family = peek_family(source)
        if family is not None:
            family.keys_for(directions)  # a direction the family does not have fails before any work
    if (private or branch) and not repo_id:
        raise UserError("--private and --branch apply to a push: add --push-to-hub REPO_ID")
    calibration_paths = _check_quantize(format, quantize, calibration, half)
    if quantize and directions:
        _one_source_domain(directions)
    output = Path(output).expanduser()
    # --overwrite replaces only a folder this tool provably wrote: never the source, a folder holding it, the
    # current directory or home (checked before loading a 1.1 GB generator, and again before the swap)
    local = Path(str(source)).expanduser()
    protect = [local] if local.exists() or local.is_symlink() else []
    check_output_folder(output, overwrite=overwrite, protect=protect, own=is_own_model_file, guarded=True)
    if format == "onnx":
        _require_onnx()
    token = _hub_token(repo_id) if repo_id else None  # a missing token is found before the work, not after
    start = time.perf_counter()
    known = peek_family(source)  # how many networks an ONNX export writes, when the family is known before loading
    if known is not None:
        known.check_export_options(dict(options or {}))  # before loading the model
    networks = len(directions) if directions else len(known.weight_files(None)) if known is not None else 2
    steps = 1 + (networks if format == "onnx" else 1) + (1 if repo_id else 0)
    with step_progress(steps, enabled=show_progress) as step:
        step(f"loading {source}")
        with contextlib.nullcontext() if show_progress else progress_disabled():
            model = resolve_model(source, directions, revision)
        family = model.family
        if size is not None:
            model = family.with_training_size(model, size)
        model = family.complete_model(model, dict(options or {}))
        exported = model.with_(card=_card_facts(model, source), weights_dtype="float16" if half else "float32")
        keys = tuple(exported.nets)
        if quantize:
            _one_source_domain([key for key in keys if key in family.directions])
        card: dict[str, Any] = {"model_id": repo_id} if repo_id else {}
        with atomic_folder(output, overwrite=overwrite, protect=protect, own=is_own_model_file) as tmp:
            if format == "safetensors":
                names = family.weight_files(exported.config)
                step(f"writing {', '.join(names[k] for k in keys)}")
                ModelFolder(exported).save_pretrained(tmp, model_card_kwargs=card)
            else:
                ios, beside = {}, []
                quantization = None
                traced: dict[Any, Any] = {}  # one trace per distinct graph (OnnxIO.graph)
                for key in keys:
                    io = family.onnx_io(exported, key)
                    if io is None:  # no graph (e.g. cluster centres): its safetensors file goes beside the graphs
                        beside.append(key)
                        continue
                    calibrated = f", {quantize}, calibrating on {len(calibration_paths)} files" if quantize else ""
                    step(f"exporting {family.onnx_name(key)} (ONNX opset {opset}{calibrated})")
                    ios[key] = io
                    with contextlib.nullcontext() if show_progress else _exporter_silenced():
                        if quantize:
                            quantization = _export_int8(exported, key, io, tmp, opset, calibration_paths, traced)
                        else:
                            export_onnx(io, tmp / family.onnx_name(key), opset=opset, half=half, traced=traced)
                if beside:
                    ModelFolder(exported.with_(nets={k: exported.nets[k] for k in beside})).save_weights(tmp)
                _write_onnx_metadata(exported, ios, tmp, opset, card, beside, quantization)
        files = {p.name: p.stat().st_size for p in sorted(output.iterdir()) if p.is_file()}
        result = ExportResult(output, format, keys, exported.weights_dtype, files,
                              time.perf_counter() - start, opset if format == "onnx" else None, quantize)
        if format == "onnx":
            first = next(iter(ios.values()))
            result.onnx = {"inputs": list(first.input_names), "outputs": list(first.output_names)}
        if repo_id:
            step(f"pushing to {repo_id}")
            try:
                url = push_model_folder(output, repo_id, private=private, branch=branch, token=token)
            except UserError as exc:
                raise type(exc)(f"{exc} (the export itself is complete in {output})") from None
            result.pushed = {"repo_id": repo_id, "branch": branch or "main", "commit_url": url}
    result.seconds = time.perf_counter() - start
    return result


def _check_quantize(format: str, quantize: str | None, calibration: str | os.PathLike | None,
                    half: bool) -> list[Path]:
    """The calibration files for ``quantize`` (checked before any model is loaded), [] without it."""
    if quantize is None:
        if calibration is not None:
            raise UserError("--calibration applies to --quantize int8")
        return []
    from .quantize import QUANTIZE_CHOICES, calibration_images, require_quantization

    if quantize not in QUANTIZE_CHOICES:
        raise UserError(f"unknown quantization {quantize!r}; expected {', '.join(QUANTIZE_CHOICES)}")
    if format != "onnx":
        raise UserError("--quantize int8 writes ONNX graphs: add --format onnx")
    if half:
        raise UserError("--quantize int8 and --half do not combine: int8 weights are already a quarter of the size")
    if calibration is None:
        raise UserError("--quantize int8 needs --calibration PHOTOS/: a folder of real images of the source domain")
    require_quantization()
    return calibration_images(calibration)


def _one_source_domain(directions: Sequence[str]) -> None:
    """UserError when an int8 export would calibrate more than one direction: each direction's graph must be
    calibrated on photos of its own source domain, and ``--calibration`` is one folder."""
    if len(directions) > 1:
        raise UserError(f"--quantize int8 calibrates on photos of one source domain, and {', '.join(directions)} "
                        f"read different ones: export one direction at a time (--direction {directions[0]} "
                        "--calibration PHOTOS_OF_ITS_SOURCE_DOMAIN/)")


def _export_int8(model: Model, key: str, io: OnnxIO, folder: Path, opset: int, calibration: list[Path],
                 traced: dict[Any, Any]) -> dict[str, Any]:
    """Export the fp32 graph beside the final name, quantize it into ``onnx_name(key)``, drop the fp32 one.
    The calibration inputs are read by the family's translator for ``key`` at the model's own size."""
    from .quantize import quantize_int8

    family = model.family
    direction = key if key in family.directions else None
    try:
        translator = family.translator(model, direction, None, family.check_options({}))
    except UserError as exc:
        raise UserError(f"cannot calibrate int8 for this model: {exc}") from None
    name = family.onnx_name(key)
    fp32 = folder / f".fp32.{name}"
    try:
        export_onnx(io, fp32, opset=opset, traced=traced)
        with atomic_file(folder / name) as tmp:
            facts = quantize_int8(fp32, tmp, calibration, translator)
    finally:
        fp32.unlink(missing_ok=True)
        Path(f"{fp32}.data").unlink(missing_ok=True)
    return facts


def _card_facts(model: Model, source: str | os.PathLike) -> dict[str, Any]:
    """The loader's facts about the model, and an origin sentence when the loader gave none.

    Local sources are named by their file or folder name only: a card is often published, a home
    directory's path should not be.
    """
    facts = dict(model.card)
    text = str(source)
    if Path(text).expanduser().exists():
        origin = f"`{Path(text).name}`"
    elif text in (named := registered_models()):
        origin = f"the registered model `{text}` ({named[text].origin})"
    else:  # a Hub repo: the card's metadata links the two
        origin = f"the Hub repository [{text}]({constants.ENDPOINT}/{text})"
        facts.setdefault("base_model", text)
    facts.setdefault("source", f"Exported by ugatit-cli {__version__} from {origin}.")
    return facts


# --- ONNX ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _exporter_silenced():
    """--quiet/--json: the ONNX exporter's own warnings, log lines and progress prints are not shown."""
    import io
    import logging
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def _require_onnx() -> None:
    for module in ("onnx", "onnxscript"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise UserError(f"ONNX export needs the optional packages onnx and onnxscript: {ONNX_EXTRA_HINT}") from None


def export_onnx(io: OnnxIO, path: Path, *, opset: int = ONNX_OPSET, half: bool = False,
                traced: dict[Any, Any] | None = None, external_data: bool = False) -> None:
    """One network as an ONNX graph, as the family's :class:`~ugatit_cli.families.base.OnnxIO` describes it
    (inputs, outputs, dynamic axes; sides marked dynamic are multiples of ``io.multiple``). ``half`` stores
    the weights in float16, cast to float32 inside the graph.

    ``traced``: one dict for the networks of one export. A network whose ``io.graph`` names a graph traced
    before (same class, inputs and weight shapes) reuses that trace with its own weights: tracing is most of
    a small model's export time (``benchmarks/export.py --small``).

    ``external_data``: the weights go to ``<name>.data`` beside the graph (always so above protobuf's 2 GiB),
    which ONNX Runtime maps from the file instead of parsing a copy out of the graph."""
    _require_onnx()
    import onnx

    module = io.module
    parameters = set(module.state_dict())
    if half:
        # Round the weights first, so that constants the exporter folds from them (e.g. 1 - rho) are computed
        # from the float16 values too, and the graph computes exactly what the float16 weights give in PyTorch.
        module = copy.deepcopy(module)
        with torch.no_grad():
            for tensor in module.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half())
    model = _onnx_program(io, module.eval(), opset, {} if traced is None else traced).model_proto
    if half:
        store_initializers_as_float16(model, parameters)
    onnx.helper.set_model_props(model, {"ugatit_cli.version": __version__,
                                        "ugatit_cli.weights_dtype": "float16" if half else "float32"})
    if external_data or sum(t.ByteSize() for t in model.graph.initializer) > ONNX_INLINE_LIMIT:
        _save_with_external_data(model, path)
    else:
        with atomic_file(path) as tmp:
            onnx.save_model(model, tmp)


def _save_with_external_data(model: Any, path: Path) -> None:
    """``path`` and its weights file, written in a temporary sibling folder and renamed into place weights
    first: a reader never finds the graph without its complete weights, and two processes saving the same
    graph at once (torchrun ranks filling the ONNX cache) both end with complete files."""
    import onnx

    data = external_data_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent) as tmp:
        onnx.save_model(model, Path(tmp) / path.name, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name)  # tensors under 1 KB stay inline: shape inference reads them
        (Path(tmp) / data.name).touch()  # a graph with only small tensors gets an empty one: the pair is complete
        for name in (data.name, path.name):
            honour_umask(Path(tmp) / name)  # onnx writes the weights file 0600
            os.replace(Path(tmp) / name, path.parent / name)


def _onnx_program(io: OnnxIO, module: Any, opset: int, traced: dict[Any, Any]) -> Any:
    """``module`` as an optimized ``torch.onnx.ONNXProgram``: traced (torch.export, then the ONNX translation,
    unoptimized), or a copy of a trace in ``traced`` of the same graph given ``module``'s weights by the
    exporter's ``apply_weights``; then the exporter's own optimizer, as ``torch.onnx.export(optimize=True)``
    runs it (the optimizer folds constants from the weights, so each network is optimized on its own).

    A trace is shared only when every initializer of its graph is a ``state_dict`` entry (no constant
    computed from one network's weights can leak into another's graph); the shared copy keeps no weights,
    so a network that did not provide one fails to serialize instead of borrowing another's."""
    weights = module.state_dict()
    signature = (io.graph, type(module), opset, io.input_names, io.output_names, repr(io.dynamic), io.multiple,
                 tuple((tuple(x.shape), x.dtype) for x in io.example),
                 tuple((name, tuple(t.shape), t.dtype) for name, t in weights.items()))
    shared = traced.get(signature) if io.graph is not None else None
    if shared is None:
        program = _trace(io, module, opset)
        if io.graph is not None and set(program.model.graph.initializers) == set(weights):
            shared = traced[signature] = torch.onnx.ONNXProgram(program.model.clone(), None)
            for value in shared.model.graph.initializers.values():
                value.const_value = None  # each network brings its own; nothing of this one's is kept alive
    else:
        program = torch.onnx.ONNXProgram(shared.model.clone(), None)
        program.apply_weights(weights)
    program.optimize()
    return program


def _trace(io: OnnxIO, module: Any, opset: int) -> Any:
    """``torch.onnx.export(dynamo=True, optimize=False)`` of ``module`` with the dynamic axes of ``io``."""
    # the batch, and sides: multiples of io.multiple (e.g. an encoder that halves the image twice)
    dynamic_shapes = {}
    for name in io.input_names:
        axes = io.dynamic.get(name, {})
        dynamic_shapes[name] = {axis: torch.export.Dim(label, min=1) if axis == 0
                                else io.multiple * torch.export.Dim(f"{label}_div{io.multiple}", min=4)
                                for axis, label in axes.items()}
    with warnings.catch_warnings():
        # inputs that share the batch axis (TUNIT's input and style, pix2pixHD's label and inst) get one name
        # for it; the exporter says so in a warning per input that tells the user nothing
        warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used, since it shares")
        return torch.onnx.export(
            module, tuple(io.example), None, dynamo=True, opset_version=opset, input_names=list(io.input_names),
            output_names=list(io.output_names), dynamic_shapes=_by_argument(module, dynamic_shapes), verbose=False,
            optimize=False,
        )


def _by_argument(module: Any, shapes: dict[str, Any]) -> dict[str, Any]:
    """``dynamic_shapes`` keyed by the forward's argument names (torch.export's convention), in input order."""
    import inspect

    arguments = [name for name in inspect.signature(module.forward).parameters if name != "self"]
    return {arg: shape for arg, shape in zip(arguments, shapes.values(), strict=False)}


def store_initializers_as_float16(model: Any, names: set[str]) -> None:
    """Store the float32 initializers ``names`` (the weights) as float16, cast back by ``Cast`` nodes at the
    graph's start. Small constants the exporter derived from them stay float32.

    Own code rather than onnxconverter-common's ``convert_float_to_float16``: that one makes the graph
    compute in float16, which onnxruntime's CPU kernels mostly lack; we only want half-size storage.
    """
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for tensor in model.graph.initializer:
        if tensor.data_type != TensorProto.FLOAT or tensor.name not in names:
            continue
        name = tensor.name
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype("float16"), f"{name}.float16")
        tensor.CopyFrom(half)
        casts.append(helper.make_node("Cast", [half.name], [name], name=f"{name}.to_float32", to=TensorProto.FLOAT))
    nodes = [*casts, *model.graph.node]  # consumers keep reading the original name, now the Cast's output
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _write_onnx_metadata(model: Model, ios: dict[str, OnnxIO], folder: Path, opset: int,
                         card: dict[str, Any], beside: Sequence[str] = (),
                         quantization: dict[str, Any] | None = None) -> None:
    first = next(iter(ios.values()))
    onnx_facts = {
        "opset": opset, "input": first.input_names[0] if len(first.input_names) == 1 else list(first.input_names),
        "outputs": list(first.output_names),
        "dynamic_axes": {name: {str(k): v for k, v in axes.items()} for name, axes in first.dynamic.items()},
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
    }
    if quantization:
        onnx_facts["quantization"] = quantization
    written = ModelFolder(model)
    written.write_config(folder, onnx=onnx_facts)
    family = model.family
    files = {family.onnx_name(k): f"{family.describe_file(k)}, ONNX opset {opset}" for k in ios}
    names = family.weight_files(model.config)
    files |= {names[k]: f"{family.describe_file(k)}, safetensors" for k in beside}
    written.generate_model_card(files=files, onnx=onnx_facts, tags=["onnx"], **card).save(folder / CARD_NAME)


# --- the Hub ------------------------------------------------------------------------------------------

def push_model_folder(
    folder: str | os.PathLike, repo_id: str, *, private: bool = False, branch: str | None = None,
    token: str | None = None, commit_message: str | None = None,
) -> str:
    """Upload an exported folder to the Hub repo ``repo_id`` (created if missing) in one commit; return its URL.

    ``branch`` is created from ``main`` when it does not exist. The token is huggingface_hub's usual one
    (``token``, else ``HF_TOKEN``, else the file written by ``hf auth login``).
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise UserError(f"{folder}: not an exported model folder (no {CONFIG_NAME})")
    token = _hub_token(repo_id, token)
    family = folder_family(folder)
    kind = "model" if family is not None else "ONNX export"
    title = (family or _family_of_export(folder)).title
    message = commit_message or f"Upload {title} {kind} with ugatit-cli {__version__}"
    api = HfApi(token=token)
    with hub_write_errors(repo_id):
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        if branch and branch != "main":
            api.create_branch(repo.repo_id, branch=branch, exist_ok=True)
        info = api.upload_folder(repo_id=repo.repo_id, folder_path=folder, revision=branch, commit_message=message)
    return info.commit_url


def _hub_token(repo_id: str, token: str | None = None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise UserError(f"{repo_id}: pushing to the Hugging Face Hub needs a token: set HF_TOKEN or run "
                        "`hf auth login`")
    return token


def _family_of_export(folder: Path):
    """The family an ONNX export's config.json names (none named: U-GAT-IT, as 0.1.0 wrote them)."""
    import json

    from .families.base import get_family

    try:
        data = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    return get_family(data.get("family") if isinstance(data, dict) else None)
