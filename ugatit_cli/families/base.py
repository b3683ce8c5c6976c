"""The model-family seam: what one image-to-image system (U-GAT-IT, pix2pixHD, TUNIT, ...) tells the shared
layers, and the registry of families.

A family is a folder ``ugatit_cli/families/<name>/`` (or any importable module, see "Plugins") that owns
everything particular to one system: its config dataclasses, networks, losses, trainer step, training data
reader, importers of official checkpoints, input preparation and outputs, ONNX inputs/outputs, what ``eval``
compares and its model-card facts. The shared layers reach it only through :class:`Family`:

- ``store/`` (model folders, run folders, MODEL sources, the Hub) asks it for weight file names, builds and
  loads its networks (:meth:`Family.build_net`), and tries its importers (:attr:`Family.sources`);
- ``translate`` asks for a :class:`Translator` (input size, preparation, forward pass, outputs to write);
  with ``--backend onnxruntime`` the same translator says what the family's ONNX graph is fed and what its
  outputs are (:meth:`Translator.onnx_feeds`, :meth:`Translator.onnx_outputs`; the defaults match by name);
- ``export`` asks for :meth:`Family.onnx_io` (module, example inputs, names, dynamic axes);
- ``evaluate/`` asks for :meth:`Family.eval_pairs` (which folder is translated and compared with which;
  :meth:`Family.eval_plan` once the model is loaded) and :meth:`Family.eval_scores` (other measurements);
- ``cluster`` asks for a :class:`DomainAssigner` (:meth:`Family.assigner`: each image's domain);
- ``train/`` (run folder, checkpoints, resume, signals, DDP, logging) asks for the training data
  (:meth:`Family.scan_data`, :meth:`Family.loader`, :meth:`Family.attach_data`) and a :class:`FamilyTrainer`;
  ``store/hub_datasets`` writes a Hub dataset into that layout as :attr:`Family.hub_columns` says;
- ``cli/`` builds each family's ``train`` options from :attr:`Family.hyper_params` (one Typer help panel
  per family) and its ``translate`` options from :attr:`Family.translate_options`.

Heavy imports (torch, the networks) happen inside the methods, never when the family module is imported:
``ugatit --help`` imports every registered family to list its options.

Plugins: a family outside this package registers with one call, :func:`register_family`. The registry also
imports the modules named by the environment variable ``UGATIT_FAMILIES`` (``module:attribute`` pairs,
comma-separated; the attribute is a Family instance or class), so that ``ugatit ...`` in a new process sees
them. (Not Python entry points: scanning installed packages' metadata costs ``ugatit --help`` ~70 ms, a
third of its start-up.)
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from ..errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: Version of the model/run folder layout that ``config.json`` records as ``format_version``. A folder
#: without it was written by ugatit-cli 0.1.0 (always U-GAT-IT).
FORMAT_VERSION = 1
DEFAULT_FAMILY = "ugatit"
ENV_VAR = "UGATIT_FAMILIES"


# --- options: dataclass fields that the CLI turns into options --------------------------------------------


def option(default: Any = dataclasses.MISSING, *, help: str = "", flag: str | None = None,
           negative: str | None = None, default_factory: Any = dataclasses.MISSING,
           show_default: str | None = None) -> Any:
    """A dataclass field that is also a CLI option.

    ``flag`` is the option name (default ``--field-name``); ``negative`` the off switch of a bool
    (``--no-decay``). ``show_default`` replaces the printed default. The CLI reads these from
    ``dataclasses.fields(...).metadata["cli"]``; the default shown is the field's own, so they never disagree.
    """
    meta = {"cli": {"help": help, "flag": flag, "negative": negative, "show_default": show_default}}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def cli_flag(f: dataclasses.Field) -> str:
    """The option name of a dataclass field (``n_res`` -> ``--n-res`` unless ``option(flag=...)`` says)."""
    meta = f.metadata.get("cli", {})
    return meta.get("flag") or "--" + f.name.replace("_", "-")


@dataclass(frozen=True)
class TranslateOption:
    """An extra ``ugatit translate`` option of a family (``--heatmap``, ``--reference IMAGE``, ``--domain K``,
    ``--instance-maps DIR``). ``type`` is ``bool``, ``int``, ``float``, ``str`` or ``Path``; the value reaches
    :meth:`Family.translator` in ``options[name]`` (None when not given, False for an unset bool).

    ``per_input``: the value is a folder holding one file per input, found by the input's name (pix2pixHD's
    instance maps); ``ugatit demo`` asks for that one file and puts it in such a folder."""

    name: str
    type: type
    help: str
    flag: str | None = None
    metavar: str | None = None
    per_input: bool = False

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


# --- the run settings every family shares ------------------------------------------------------------------


@dataclass
class RunConfig:
    """How a training run goes, whatever the family: length, batch, seed, numerics, cadence. A family's own
    hyper-parameters (losses, optimiser, architecture) are its :attr:`Family.hyper_params`; a family may
    change these defaults in :attr:`Family.run_defaults`. Each field is an ``ugatit train`` option."""

    iterations: int = option(100_000, help="Total training iterations.")
    batch_size: int = option(1, help="Images per iteration (per domain where there are two; per process "
                                     "under torchrun).")
    seed: int = option(0, help="Seed of the initial weights, data order and augmentation.")
    ema: float | None = option(None, help="Keep an exponential moving average of the generators with this decay "
                                          "(e.g. 0.999); samples and models loaded from the run use it.")
    precision: str = option("fp32", help="fp32, bf16 or fp16 (autocast; GradScaler for fp16).")
    compile: bool = option(False, help="torch.compile the networks.", negative="--no-compile")
    workers: int = option(2, help="Data-loading worker processes.")
    save_every: int = option(1000, help="Iterations between checkpoints.")
    keep_checkpoints: int = option(3, help="Checkpoints to keep (the newest).", flag="--keep")
    sample_every: int = option(1000, help="Iterations between sample grids.")
    log_every: int = option(10, help="Iterations between lines of log.jsonl.")

    def check(self) -> None:
        """UserError for values no run can use."""
        for name in ("iterations", "batch_size", "save_every", "sample_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise UserError(f"--workers must be >= 0, got {self.workers}")
        if self.seed < 0:
            raise UserError(f"--seed must be >= 0, got {self.seed}")
        if self.ema is not None and not 0.0 <= self.ema < 1.0:
            raise UserError(f"--ema must be in [0, 1), got {self.ema}")


def dataclass_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """``cls`` from the mapping's keys that are its fields (others are ignored, so newer files still load)."""
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


# --- directions --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Direction:
    """Which way a model translates, for families whose model holds one generator per way (U-GAT-IT:
    ``a2b``, ``b2a``). Families with one generator (pix2pixHD) or a per-call condition (TUNIT: a reference
    image or a domain index, in :class:`TranslateOption` s) declare no directions.

    ``parse`` is the one place a user's ``--direction`` is checked; ``both`` expands to every direction.
    """

    name: str

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def parse(text: str, family: Family, *, allow_both: bool = False) -> tuple[Direction, ...]:
        """``text`` as one direction (or, with ``allow_both``, ``both`` = all of them); UserError otherwise."""
        names = family.directions
        if not names:
            raise UserError(f"--direction does not apply to {family.title} models (they have one way)")
        if allow_both and text == "both":
            return tuple(Direction(n) for n in names)
        if text not in names:
            expected = " or ".join([*names, *(["both"] if allow_both else [])])
            raise UserError(f"unknown direction {text!r}; expected {expected}")
        return (Direction(text),)


# --- training data from a Hub dataset ------------------------------------------------------------------------


@dataclass(frozen=True)
class HubColumns:
    """How the columns of a Hugging Face Hub dataset (``ugatit train hf://datasets/OWNER/NAME``) become the
    family's DATA_DIR layout, which :meth:`Family.scan_data` then reads like any local folder (see
    :mod:`ugatit_cli.store.hub_datasets`).

    ``roles``: each role (a column of images) -> the column names it is recognised by (case-insensitive, or as
    the end of the name: ``A`` finds ``imageA``), in the order ``--domain-column`` names them. ``train`` and
    ``test``: role -> its folder in DATA_DIR for the training split and for the test split (samples, eval).
    ``optional``: roles a dataset may lack (pix2pixHD's instance maps). ``paired``: a row is one example (a
    row without an image of a required role is left out whole); otherwise each role's column is read on its
    own (unpaired domains, where a label column may also say which rows are which role). ``classes``: a label
    column becomes first-level class subfolders of the one role's folder (what TUNIT reads as classes).
    """

    roles: Mapping[str, tuple[str, ...]]
    train: Mapping[str, str]
    test: Mapping[str, str] = field(default_factory=dict)
    optional: tuple[str, ...] = ()
    paired: bool = False
    classes: bool = False


# --- what a family hands the store ------------------------------------------------------------------------


@runtime_checkable
class ModelConfig(Protocol):
    """A family's architecture dataclass (what ``config.json`` of a model folder holds besides ``family``,
    ``format_version`` and ``weights_dtype``). The size rules are its methods."""

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build from ``config.json``; unknown keys are ignored; ValueError for values it rejects."""
        ...

    def default_size(self) -> int:
        """The square side the model runs at when the user gives no ``--size`` (its training size)."""
        ...

    def check_size(self, size: int | None) -> int:
        """``size`` if the model can run at it (``default_size()`` for None); UserError with the rule
        otherwise."""
        ...


@dataclass(frozen=True)
class LocalSource:
    """One local MODEL format a family reads (a checkpoint of its official code, ...).

    ``matches(path)`` recognises it cheaply (file names, magic bytes; it must not raise); ``load(path,
    keys)`` returns a :class:`~ugatit_cli.store.model.Model` holding at least the networks ``keys``."""

    kind: str
    matches: Callable[[Path], bool]
    load: Callable[[Path, Sequence[str]], Any]


@dataclass(frozen=True)
class RegisteredModel:
    """A named pretrained model (``ugatit models``, ``--model NAME``); ``resolve(keys, revision)`` returns
    the :class:`Model` with those networks loaded. ``local_folder(key, revision)``, when given, is the model
    folder on this machine that already holds network ``key`` (e.g. converted weights in a cache), or None;
    ``translate`` looks there for a cached ONNX graph before loading anything."""

    name: str
    description: str
    origin: str  # where the weights come from, shown by `ugatit models`
    resolve: Callable[[Sequence[str], str | None], Any]
    family: str = DEFAULT_FAMILY
    local_folder: Callable[[str, str | None], Path | None] | None = None


@dataclass(frozen=True)
class OutputSpec:
    """One file ``translate`` writes per input: ``<stem><suffix>.png`` from the forward pass's ``key``.

    ``kind`` is ``image`` (B x 3 x H x W in [-1, 1], resized to the input's size with ``--keep-size``) or
    ``jet`` (a one-channel map B x 1 x h x w, any range; min-max normalised and drawn in jet colours at the
    output image's size)."""

    key: str
    suffix: str = ""
    kind: str = "image"


@dataclass(frozen=True)
class OnnxIO:
    """What ``export --format onnx`` needs for one network of a model: the module to trace, example inputs
    (batch 2: torch.export specialises 0 and 1), input and output names, and ``dynamic`` axes per input
    (``{"input": {0: "batch", 2: "height", 3: "width"}}``; height and width are multiples of ``multiple``).

    ``graph``: networks of one model whose OnnxIO name the same ``graph`` are the same class built from the
    same config, so they trace to one ONNX graph that differs only in its weights (U-GAT-IT's two
    directions); the exporter traces the first and gives each the weights of its own ``state_dict``. None:
    traced on its own."""

    module: Any
    example: tuple[Any, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic: Mapping[str, Mapping[int, str]]
    multiple: int = 4
    description: str = ""  # one sentence for the model card: shapes and ranges of inputs and outputs
    graph: str | None = None


@dataclass(frozen=True)
class EvalPair:
    """One ``eval`` comparison: translate the images of ``source`` with ``condition`` (a direction name or
    None), compare the results with the real images of ``real``."""

    label: str  # shown in the report, e.g. "a2b"
    source: Path
    real: Path
    direction: str | None = None
    #: the family's translate options for this comparison (pix2pixHD: the instance-map folder)
    options: Mapping[str, Any] = field(default_factory=dict)
    #: more folders translated with ``source`` and compared together (TUNIT's mFID: the other domains' images)
    sources: tuple[Path, ...] = ()

    @property
    def inputs(self) -> list[Path]:
        """Every folder this comparison translates."""
        return [self.source, *self.sources]


# --- a loaded model ------------------------------------------------------------------------------------------

WEIGHTS_DTYPES = ("float32", "float16")


class Model:
    """A family's networks for inference: what a model folder holds and every MODEL source loads.

    ``nets`` maps the family's network keys (:meth:`Family.weight_files`) to modules in eval mode; a model
    may hold a subset (one direction). ``card`` holds what a loader knows for the model card (``source``: a
    Markdown sentence; ``training``: hyper-parameters; ``metrics``). ``weights_dtype`` is the dtype a model
    folder stores the weights in (``float32``, or ``float16`` for half-size exports; loading casts back).
    The store (``ugatit_cli.store.model_folder``) reads and writes model folders and the Hub.
    """

    def __init__(self, family: Family | str, config: Any, nets: Mapping[str, nn.Module] | None = None,
                 card: Mapping[str, Any] | None = None, weights_dtype: str = "float32"):
        if weights_dtype not in WEIGHTS_DTYPES:
            raise ValueError(f"weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
        self.family = get_family(family) if isinstance(family, str) else family
        self.config = config
        self.nets: dict[str, nn.Module] = dict(nets or {})
        self.card: dict[str, Any] = dict(card or {})
        self.weights_dtype = weights_dtype

    @property
    def generators(self) -> dict[str, nn.Module]:
        """The networks by key (U-GAT-IT's name for them: one generator per direction)."""
        return self.nets

    def with_(self, **changes: Any) -> Model:
        """A shallow copy with some of ``config``, ``nets``, ``card``, ``weights_dtype`` replaced."""
        values = {"config": self.config, "nets": self.nets, "card": self.card, "weights_dtype": self.weights_dtype}
        return Model(self.family, **(values | changes))


# --- inference ------------------------------------------------------------------------------------------------


class Translator(ABC):
    """A loaded model ready for ``translate``: one per call (model + direction/condition + size).

    ``translate`` reads each input with :meth:`read` on worker threads, stacks the arrays of a batch (every
    key; inputs whose arrays differ in shape go into different batches), moves them to the device, calls
    :meth:`forward` and writes :attr:`outputs`.
    """

    #: the files written per input; U-GAT-IT adds its attention map (kind "jet") with --heatmap
    outputs: tuple[OutputSpec, ...] = (OutputSpec("image"),)

    @property
    @abstractmethod
    def size(self) -> int:
        """The square side inputs are resized to."""

    @abstractmethod
    def modules(self) -> Sequence[nn.Module]:
        """The networks the forward pass uses (``translate`` moves them to the device and memory format)."""

    def read(self, source: Path) -> tuple[dict[str, Any], tuple[int, int]]:
        """Per input, on a worker thread: the NumPy arrays the forward pass needs, and the input's (width,
        height) (``--keep-size`` scales the outputs back to it). The default is the official test transform:
        the image in RGB, bilinearly resized to :attr:`size` square, as uint8 H x W x 3 under ``"pixels"``,
        plus :meth:`prepare`'s extras. Override it for inputs that are not photos (label maps) or that run
        at their own size. Raise :class:`~ugatit_cli.core.images.BadImageError` for an unusable input."""
        from ..core.images import open_rgb, resized_pixels

        img = open_rgb(source)
        pixels = resized_pixels(img, self.size)
        return {"pixels": pixels, **self.prepare(source, pixels)}, img.size

    def prepare(self, source: Path, pixels: Any) -> dict[str, Any]:
        """Extra arrays for the default :meth:`read` (e.g. a map found beside ``source``); none by default."""
        return {}

    @abstractmethod
    def forward(self, x: torch.Tensor | None, extras: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        """``x``: the ``"pixels"`` of :meth:`read` as B x 3 x H x W float in [-1, 1] on the device (None when
        ``read`` gives none); ``extras``: the other arrays, stacked, on the device as they were (dtype kept).
        Returns a tensor per :attr:`outputs` key."""

    def onnx_feeds(self, x: torch.Tensor | None, extras: Mapping[str, torch.Tensor],
                   input_names: Sequence[str]) -> dict[str, torch.Tensor]:
        """What ``translate --backend onnxruntime`` feeds the family's ONNX graph (inputs ``input_names``, as
        :meth:`Family.onnx_io` declared them) for the same batch :meth:`forward` gets. The default: each input
        named like an extra gets that extra, and the one input left gets ``x`` (U-GAT-IT: ``input`` <- the
        image; pix2pixHD: ``label`` and ``inst`` <- its extras). Override for inputs the forward pass computes
        itself. UserError when the names do not fit."""
        from ..errors import UserError

        feeds = {name: extras[name] for name in input_names if name in extras}
        left = [name for name in input_names if name not in feeds]
        if len(left) == 1 and x is not None:
            feeds[left[0]] = x
        elif left:
            raise UserError(f"the ONNX graph's inputs {', '.join(left)} are not among this translator's inputs")
        return feeds

    def can_feed_onnx(self, input_names: Sequence[str]) -> bool:
        """Whether :meth:`onnx_feeds` can feed a graph with inputs ``input_names``: ``translate`` asks before it
        exports or picks a cached graph, so ``--backend auto`` runs PyTorch (and ``--backend onnxruntime``
        says why) instead of failing on the first batch. The default: one input (the image), or inputs the
        default :meth:`onnx_feeds` matches by name at run time (pix2pixHD's ``label``, ``inst``). Override with
        :meth:`onnx_feeds`."""
        return True

    def onnx_outputs(self, results: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`forward`'s result from the graph's outputs by name (the default: the outputs named like the
        :attr:`outputs` keys; U-GAT-IT's graph outputs ``image``, ``cam_logit``, ``heatmap``)."""
        from ..errors import UserError

        missing = [spec.key for spec in self.outputs if spec.key not in results]
        if missing:
            raise UserError(f"the ONNX graph has no output {', '.join(missing)} (it has {', '.join(results)})")
        return {spec.key: results[spec.key] for spec in self.outputs}


class DomainAssigner(ABC):
    """A loaded model ready for ``ugatit cluster``: the probability of each of its K (pseudo-)domains per image.

    ``cluster`` reads each input with :meth:`read` on worker threads (by default the official test transform:
    RGB, bilinear resize to :attr:`size` square, uint8 H x W x 3), stacks a batch, scales it to [-1, 1] on the
    device and calls :meth:`probabilities`.
    """

    #: number of domains
    k: int

    @property
    @abstractmethod
    def size(self) -> int:
        """The square side inputs are resized to."""

    @abstractmethod
    def modules(self) -> Sequence[nn.Module]:
        """The networks :meth:`probabilities` uses (moved to the device, eval mode)."""

    def read(self, source: Path) -> Any:
        """Per input, on a worker thread: uint8 H x W x 3 pixels; BadImageError for an unusable input."""
        from ..core.images import open_rgb, resized_pixels

        return resized_pixels(open_rgb(source), self.size)

    @abstractmethod
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` B x 3 x H x W in [-1, 1] -> B x K probabilities (rows sum to 1)."""


# --- training ---------------------------------------------------------------------------------------------------


@runtime_checkable
class TrainingData(Protocol):
    """What :meth:`Family.scan_data` found: enough to build the loader, recorded in the run folder."""

    root: Path

    def relative(self) -> dict[str, list[str]]:
        """The training files relative to ``root`` per stream (``data.json`` of a run records it)."""
        ...


@runtime_checkable
class FamilyTrainer(Protocol):
    """A family's networks, optimisers and one training step; the shared run drives it.

    Seed the global torch RNG before constructing it (the networks' initial weights come from it). With
    ``distributed=True`` the process group is initialised and the trainer wraps what it updates in DDP.
    """

    iteration: int  # completed steps
    nets: Mapping[str, nn.Module]  # every network, by the official names (saved as <name>.safetensors)
    ema: Mapping[str, nn.Module] | None  # EMA copies of some nets (saved as ema_<name>.safetensors), or None

    def train_step(self, batch: Any) -> dict[str, float]:
        """One iteration on a batch from :meth:`Family.loader`; the loss terms (plain floats) and ``lr``. The
        first two keys are shown in the progress line."""
        ...

    def sample_grids(self, batch: Any) -> Mapping[str, Any]:
        """PIL images to write as ``samples/<name>_<iteration>.png`` from :meth:`Family.sample_batch`."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """``{"iteration", "nets": {name: state}, "ema": {name: state} | None, ...}``; everything else
        (optimisers, scaler) must be tensors and plain containers (``torch.load(weights_only=True)``)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any], source: str = "checkpoint") -> None:
        """Restore what :meth:`state_dict` returned; UserError naming ``source`` when it does not fit."""
        ...

    def load_official(self, path: Path) -> None:
        """Start from an official checkpoint (``--init-from FILE``)."""
        ...


# --- the family -------------------------------------------------------------------------------------------


class Family(ABC):
    """Everything the shared layers know about one image-to-image system. Subclass, fill in, register an
    instance with :func:`register_family`."""

    #: the ``--arch`` value and ``config.json``'s ``family``
    name: ClassVar[str]
    #: human name ("U-GAT-IT"), used in messages, help panels and model cards
    title: ClassVar[str]
    #: architecture dataclass (see :class:`ModelConfig`)
    model_config: ClassVar[type]
    #: training hyper-parameters dataclass: losses, optimiser, architecture knobs; fields made with
    #: :func:`option` become ``ugatit train --arch NAME`` options in the family's help panel
    hyper_params: ClassVar[type]
    #: overrides of :class:`~ugatit_cli.train.config.RunConfig` defaults (e.g. ``{"iterations": 1_000_000}``)
    run_defaults: ClassVar[Mapping[str, Any]] = {}
    #: ``--direction`` values; () when the family has one way (its ``default_direction`` is then None)
    directions: ClassVar[tuple[str, ...]] = ()
    default_direction: ClassVar[str | None] = None
    #: extra ``ugatit translate`` options (``--heatmap``, ``--reference``, ``--domain``, ``--instance-maps``)
    translate_options: ClassVar[tuple[TranslateOption, ...]] = ()
    #: extra ``ugatit export`` options, declared as translate options are: data that completes a model before it
    #: is written (TUNIT: ``--style-data DIR``, images to compute per-domain style codes from); see
    #: :meth:`complete_model`
    export_options: ClassVar[tuple[TranslateOption, ...]] = ()
    #: what DATA_DIR must hold, one line for ``ugatit train --help`` and errors
    data_layout: ClassVar[str] = ""
    #: how a Hub dataset's columns fill that layout (None: the family does not train from Hub datasets); see
    #: :meth:`hub_columns_for` when it depends on the settings
    hub_columns: ClassVar[HubColumns | None] = None
    #: what the family adds to the help of shared options, by key: ``model`` (the MODEL forms its importers
    #: read), ``direction``, ``size``, ``init_from``, ``eval_direction``, ``eval_data``
    cli_help: ClassVar[Mapping[str, str]] = {}
    #: Hub tags and paper link for model cards
    tags: ClassVar[tuple[str, ...]] = ()
    paper_url: ClassVar[str | None] = None
    #: model card pieces (Jinja, rendered with the card's facts): the opening sentence's subject, the "Use"
    #: section (ending in a blank line) and the "Citation" section
    card_summary: ClassVar[str] = "An image-to-image translation model"
    card_use: ClassVar[str] = ""
    card_citation: ClassVar[str] = ""

    # -- networks and model folders --

    @abstractmethod
    def weight_files(self, config: Any) -> Mapping[str, str]:
        """Network key -> safetensors file name of a model folder (U-GAT-IT: ``a2b`` ->
        ``generator_a2b.safetensors``). A folder may hold a subset (a one-direction export)."""

    @abstractmethod
    def keys_for(self, directions: Sequence[str] | None) -> tuple[str, ...]:
        """The network keys a translation in ``directions`` (None: every way the family has) needs."""

    @abstractmethod
    def build_net(self, config: Any, key: str) -> nn.Module:
        """A freshly initialised network ``key`` for ``config`` (loading weights is the store's job)."""

    def describe_file(self, key: str) -> str:
        """What the model card says of network ``key``'s file."""
        return key

    # -- local formats and named models --

    #: importers of official checkpoints, tried in order after the model and run folders
    sources: ClassVar[Sequence[LocalSource]] = ()

    def registered_models(self) -> Sequence[RegisteredModel]:
        """Named pretrained models of this family."""
        return ()

    # -- translation --

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` restricted to :attr:`translate_options`; UserError for a given option (not None, not
        False) that this family does not have."""
        self._refuse_unknown(self.translate_options, options, "")
        return {o.name: options.get(o.name) for o in self.translate_options}

    def _refuse_unknown(self, declared: Sequence[TranslateOption], options: Mapping[str, Any], doing: str) -> None:
        """UserError for a given option (not None, not False) that is not among ``declared``."""
        known = {o.name for o in declared}
        for name, value in options.items():
            if name not in known and value not in (None, False):
                raise UserError(f"--{name.replace('_', '-')} does not apply to {doing}{self.title} models")

    #: every file :meth:`outputs` may add beside the translation, whatever the options (U-GAT-IT: the
    #: ``_heatmap`` attention map): ``eval --fake`` does not count them as translations
    extra_outputs: ClassVar[tuple[OutputSpec, ...]] = ()

    def outputs(self, options: Mapping[str, Any]) -> tuple[OutputSpec, ...]:
        """The files written per input with these options (known before the model is loaded, so that existing
        outputs can be skipped without loading it). The translator's ``outputs`` must be the same."""
        return (OutputSpec("image"),)

    @abstractmethod
    def translator(self, model: Any, direction: str | None, size: int | None,
                   options: Mapping[str, Any]) -> Translator:
        """A :class:`Translator` for ``model`` (a Model of this family), ``direction`` (one of
        :attr:`directions`, or None), ``size`` (None: the model's) and the family's translate ``options``;
        UserError for options that do not apply or do not fit."""

    def graph_translator(self, config: Any, direction: str | None, size: int | None,
                         options: Mapping[str, Any]) -> Translator | None:
        """A :class:`Translator` for the family's ONNX graph of ``direction`` alone, built from the ``config``
        without networks: its :meth:`~Translator.read`, :meth:`~Translator.onnx_feeds` and
        :meth:`~Translator.onnx_outputs` work on NumPy arrays (``forward`` is never called), so ``translate``
        runs a stored graph with ONNX Runtime without importing torch. None (the default) when translating
        needs more than the graph (another network, e.g. a style encoder, or torch to read the inputs):
        ``translate`` then loads the model. UserError as :meth:`translator` for options that do not fit."""
        return None

    # -- export --

    def check_export_options(self, options: Mapping[str, Any]) -> None:
        """UserError for a given export option (not None, not False) that this family does not have."""
        self._refuse_unknown(self.export_options, options, "exporting ")

    def complete_model(self, model: Any, options: Mapping[str, Any]) -> Any:
        """``model`` completed with what the :attr:`export_options` in ``options`` give (name -> value, None
        when not given), before ``ugatit export`` writes it; UserError for an option this family does not have
        (:meth:`check_export_options`). The default returns ``model`` unchanged."""
        self.check_export_options(options)
        return model

    @abstractmethod
    def onnx_io(self, model: Any, key: str) -> OnnxIO | None:
        """How network ``key`` of ``model`` is exported to ONNX; None for a network that is no graph (e.g. a
        table of cluster centres): the export stores it as its safetensors file beside the graphs."""

    def onnx_name(self, key: str) -> str:
        return Path(self.weight_files(None)[key]).with_suffix(".onnx").name

    def onnx_net(self, config: Any, key: str, run: Any) -> nn.Module | None:
        """Network ``key`` of an ONNX export folder as a module that the family's translator and assigner call
        like the PyTorch network, its graph run by ``run`` (a callable: dict of input name -> tensor to dict
        of output name -> CPU tensor; ONNX Runtime). For networks that are not the one the translate graph
        replaces (TUNIT's guiding network: style codes of references, ``cluster``). None (the default): the
        family needs no such network."""
        return None

    # -- evaluation --

    @abstractmethod
    def eval_pairs(self, data_dir: Path, directions: Sequence[str] | None) -> list[EvalPair]:
        """What ``ugatit eval DATA_DIR`` translates and compares with what (UserError when DATA_DIR lacks a
        folder)."""

    def eval_plan(self, model: Any, data_dir: Path, directions: Sequence[str] | None, workdir: Path
                  ) -> list[EvalPair]:
        """What ``eval`` compares once the model is loaded: the default is :meth:`eval_pairs`. A family whose
        comparisons depend on the model (TUNIT without labels: each pseudo-domain's images, as the model sorts
        them) overrides it; ``workdir`` is a temporary folder it may fill (removed after the evaluation)."""
        return self.eval_pairs(data_dir, directions)

    def eval_scores(self, model: Any, data_dir: Path, comparisons: Sequence[Any], device: Any) -> dict[str, float]:
        """Measurements of ``model`` on ``data_dir`` besides the KID/FID of each comparison (TUNIT: cluster
        accuracy against class subfolders, mean FID over domains); ``comparisons`` are the ones made (with
        ``label``, ``kid_mean``, ``fid``). None by default."""
        return {}

    def paired_scores(self, pair: EvalPair, translated: Path) -> dict[str, float] | None:
        """Metrics of a paired task (each translation against its own real image), added to the pair's
        KID/FID; ``translated`` holds the translations of ``pair.source`` named as ``translate`` names them.
        None (the default): the family's task has no pairs (U-GAT-IT, TUNIT)."""
        return None

    # -- domains --

    def assigner(self, model: Any, size: int | None) -> DomainAssigner:
        """A :class:`DomainAssigner` for ``ugatit cluster`` (``size`` None: the model's); UserError for a family
        whose models have no domains to sort images into (the default)."""
        raise UserError(f"{self.title} models do not sort images into domains")

    # -- training --

    @abstractmethod
    def scan_data(self, data_dir: Path) -> TrainingData:
        """Find and check the training data (UserError when the layout is wrong or nothing is readable)."""

    def check_data(self, data: TrainingData, hyper: Any) -> None:
        """UserError listing every problem of ``data`` (from :meth:`scan_data`) under the settings ``hyper``,
        called before a run writes anything; a family whose scan keeps its problems for this (pix2pixHD: ids
        against --label-nc, sizes against the transform) reports them all at once. Nothing by default."""
        return None

    def hub_columns_for(self, hyper: Any) -> HubColumns | None:
        """How a Hub dataset fills DATA_DIR for a run with the hyper-parameters ``hyper`` (by default
        :attr:`hub_columns`, whatever the settings)."""
        return self.hub_columns

    @abstractmethod
    def loader(self, data: TrainingData, run: Any, hyper: Any, start: int, stop: int, rank: int,
               world_size: int, pin_memory: bool) -> Iterable[Any]:
        """The batches of iterations ``start .. stop - 1`` on this rank; the batch of an iteration must not
        depend on where a run was resumed (see ``ugatit_cli.data``)."""

    def attach_data(self, trainer: Any, data: TrainingData, hyper: Any) -> None:
        """Give ``trainer`` the training data it uses beyond the batches (TUNIT: the images its checkpoints
        compute per-domain mean style codes from); called on every rank after :meth:`trainer`. Nothing by
        default."""
        return None

    def sample_batch(self, data: TrainingData, hyper: Any) -> Any:
        """Fixed images for the sample grids (None: no grids)."""
        return None

    @abstractmethod
    def model_config_for(self, hyper: Any) -> Any:
        """The architecture that ``hyper`` trains; ValueError for values that do not fit."""

    @abstractmethod
    def trainer(self, run: Any, hyper: Any, device: torch.device, distributed: bool) -> FamilyTrainer:
        """A :class:`FamilyTrainer` for the run settings ``run`` and the hyper-parameters ``hyper``."""

    #: hyper-parameters a resumed run may change (beyond the shared run settings such as --iterations): the
    #: phases :meth:`resolved_schedule` records
    resumable_settings: ClassVar[frozenset[str]] = frozenset()

    def resolved_schedule(self, run: Any, hyper: Any) -> dict[str, Any]:
        """Hyper-parameters left at None whose value derives from ``run.iterations`` (TUNIT's warm-up, pix2pixHD's
        ``niter_decay``), resolved for ``run``: a run records them when it starts, so that a resume with another
        ``--iterations`` keeps its phases. Nothing by default."""
        return {}

    def check_settings(self, run: Any, hyper: Any, resumed: bool = False) -> None:
        """ValueError, in option names, for settings this family cannot train with, raised before anything is
        written: by default the architecture (:meth:`model_config_for`); a family whose trainer checks more
        (settings that depend on ``run``, such as a phase longer than ``run.iterations``) checks that too.
        ``hyper`` has its schedule resolved; ``resumed``: its phases are those the run recorded when it started."""
        self.model_config_for(hyper)

    def schedule_note(self, run: Any, hyper: Any) -> str | None:
        """One line on what the phases of ``run`` (with ``hyper`` resolved) are, shown when a resume changes
        ``--iterations``; None: nothing to say (the default)."""
        return None

    #: network key of a model folder -> the trainer's net name it is exported from (U-GAT-IT: a2b -> genA2B)
    trained_nets: ClassVar[Mapping[str, str]] = {}

    def finish_training(self, trainer: FamilyTrainer, data: TrainingData, run: Any, hyper: Any,
                        device: torch.device, rank: int, world_size: int) -> str | None:
        """Called on every rank after the run's last iteration, before its checkpoint is saved: what a family
        computes once from the trained networks (pix2pixHD: the feature clusters of the training set) goes
        into the trainer's nets here. Returns a line to show, or None. The default does nothing."""
        return None

    def can_init_from(self, path: Path) -> bool:
        """Whether ``--init-from path`` names a file :meth:`FamilyTrainer.load_official` reads."""
        return False

    def with_training_size(self, model: Any, size: int) -> Any:
        """``model`` with the training size a user states (``export --size``), for checkpoints that do not
        store it. UserError when the family's models always know theirs (the default)."""
        raise UserError(f"--size {size}: {self.title} models record their own size; leave --size out")

    # -- model card --

    def card_facts(self, model: Any) -> dict[str, Any]:
        """More facts for the model card template (the store fills in ``title``, ``files``, ``config``,
        ``direction``, ``model_id``, ``weights_dtype``, ``version``, ``onnx``)."""
        return {}

    def translate_example(self, checkpoint: Path | None) -> str:
        """The options a working ``ugatit translate IMAGES --model RUN`` needs for a model of this family
        (the training summary shows the command), with the run's newest ``checkpoint`` folder to read them
        from; "" (the default): none."""
        return ""


# --- the registry -------------------------------------------------------------------------------------------

_FAMILIES: dict[str, Family] = {}
#: built-in families, imported when first asked for
_BUILTIN: dict[str, str] = {"ugatit": "ugatit_cli.families.ugatit:FAMILY",
                            "pix2pixhd": "ugatit_cli.families.pix2pixhd:FAMILY",
                    "tunit": "ugatit_cli.families.tunit:FAMILY"}
_plugins_loaded = False


def register_family(family: Family) -> Family:
    """Add ``family`` (an instance) to the registry under ``family.name``; a second family of that name
    replaces the first. Returns it, so it can decorate an instance creation."""
    if not getattr(family, "name", None):
        raise ValueError("a family needs a name")
    _FAMILIES[family.name] = family
    return family


def _import(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    obj = import_module(module.strip())
    for part in (attr.strip() or "FAMILY").split("."):
        obj = getattr(obj, part)
    return obj


def load_plugins() -> None:
    """Register the families named by ``UGATIT_FAMILIES`` (``module:attr,...``; ``attr`` defaults to
    ``FAMILY``); once per process. A plugin that fails to import is a UserError."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    specs = [s for s in os.environ.get(ENV_VAR, "").split(",") if s.strip()]
    for spec in specs:
        try:
            family = _import(spec)
        except Exception as exc:  # any import failure of a plugin means the same to the user
            raise UserError(f"{ENV_VAR}: cannot import {spec.strip()!r} ({type(exc).__name__}: {exc})") from None
        register_family(family() if isinstance(family, type) else family)


def get_family(name: str | None) -> Family:
    """The family ``name`` (None: U-GAT-IT, what a folder without ``family`` holds); UserError if unknown."""
    name = name or DEFAULT_FAMILY
    if name not in _FAMILIES and name in _BUILTIN:
        register_family(_import(_BUILTIN[name]))
    if name not in _FAMILIES:
        load_plugins()
    if name not in _FAMILIES:
        known = sorted(families())
        close = difflib.get_close_matches(name.lower(), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"unknown model family {name!r}; {hint}known: {', '.join(known)}")
    return _FAMILIES[name]


def extra_output_suffixes() -> tuple[str, ...]:
    """The name suffixes (before ``.png``) of the files any family's ``translate`` writes beside its
    translations (:attr:`Family.extra_outputs`), e.g. ``_heatmap``."""
    return tuple(sorted({spec.suffix for family in families().values() for spec in family.extra_outputs
                         if spec.suffix}))


def families() -> dict[str, Family]:
    """Every family: the built-in ones, the plugins, and those registered in this process; by name."""
    for name in _BUILTIN:
        if name not in _FAMILIES:
            get_family(name)
    load_plugins()
    return dict(_FAMILIES)
