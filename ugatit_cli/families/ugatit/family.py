"""U-GAT-IT as a model family: what the shared layers ask of it (see :mod:`ugatit_cli.families.base`).

Kim et al., "U-GAT-IT: Unsupervised Generative Attentional Networks with Adaptive Layer-Instance Normalization
for Image-to-Image Translation", ICLR 2020 (https://arxiv.org/abs/1907.10830); official code
znxlwm/UGATIT-pytorch and taki0112/UGATIT (TensorFlow).

- networks: one generator per direction (``a2b`` = genA2B, ``b2a`` = genB2A), each in its own model-folder
  file ``generator_<direction>.safetensors``; training adds four discriminators (disGA disGB disLA disLB);
- a generator returns ``(image, cam_logit, heatmap)``; ``translate`` writes the image, and with ``--heatmap``
  the attention map as ``<name>_heatmap.png``; ONNX outputs ``image``, ``cam_logit``, ``heatmap``;
- data: ``trainA/ trainB/ [testA/ testB/]``; ``eval`` translates testA (a2b) and compares with testB.

Only dataclasses are imported at module level: ``ugatit --help`` imports this to list the options.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import UserError
from ..base import (
    EvalPair,
    Family,
    HubColumns,
    LocalSource,
    Model,
    OnnxIO,
    OutputSpec,
    RegisteredModel,
    TranslateOption,
    Translator,
)
from .config import UGATITConfig
from .train_config import RUN_DEFAULTS, TrainConfig, UGATITHyperParams

DIRECTIONS = ("a2b", "b2a")
#: direction -> the official name of its generator (and of its checkpoint file in a training run)
GENERATOR_NAMES = {"a2b": "genA2B", "b2a": "genB2A"}
#: direction -> (folder translated, folder of the real target images), in the official dataset layout
TEST_FOLDERS = {"a2b": ("testA", "testB"), "b2a": ("testB", "testA")}
TRAIN_FOLDERS = {"A": "trainA", "B": "trainB"}
SAMPLE_FOLDERS = {"A": "testA", "B": "testB"}
DATA_LAYOUT = "trainA/ and trainB/ (and testA/ testB/ for samples), like the official datasets"
SAMPLE_COUNT = 5  # official: train_sample_num / test_sample_num
#: a Hub dataset's image columns per domain (``imageA``, ``A``, ...), or one image column and a label column whose
#: values are the folder names (an imagefolder upload of the official layout) or any two values
HUB_COLUMNS = HubColumns(roles={"A": ("A",), "B": ("B",)}, train=TRAIN_FOLDERS, test=SAMPLE_FOLDERS)
ONNX_INPUT = "input"
ONNX_OUTPUTS = ("image", "cam_logit", "heatmap")

USE = """## Use
{% if onnx %}
Each file is one generator, ONNX opset {{ onnx.opset }}: input `input`, float32 `B x 3 x H x W` in [-1, 1];
outputs `image` (same shape, in [-1, 1]), `cam_logit` (`B x 2`) and `heatmap` (`B x 1 x H/4 x W/4`).
{% if config.light %}The batch size and the image size are dynamic (H and W multiples of 4; trained at
{{ config.img_size }} px).{% else %}The batch size is dynamic; H = W = {{ config.img_size }} (the full model's
MLP reads the whole feature map).{% endif %}

```python
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("generator_{{ direction }}.onnx")
image, cam_logit, heatmap = session.run(None, {"input": batch.astype(np.float32)})
```
{% else %}
```bash
pip install ugatit-cli
ugatit translate photos/ --model {{ model_id }} --direction {{ direction }} --output translated/
```

```python
import ugatit_cli
generator = ugatit_cli.load_generator("{{ model_id }}", direction="{{ direction }}")
image, cam_logit, heatmap = generator(batch)  # batch: B x 3 x H x W in [-1, 1]
```
{% endif %}
"""
CITATION = """## Citation

```bibtex
@inproceedings{kim2020ugatit,
  title     = {U-GAT-IT: Unsupervised Generative Attentional Networks with Adaptive Layer-Instance
               Normalization for Image-to-Image Translation},
  author    = {Junho Kim and Minjae Kim and Hyeonwoo Kang and Kwang Hee Lee},
  booktitle = {International Conference on Learning Representations},
  year      = {2020}
}
```
"""


def weights_name(direction: str) -> str:
    """The model-folder file of a direction's generator."""
    return f"generator_{direction}.safetensors"


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise UserError(f"unknown direction {direction!r}; expected a2b or b2a")
    return direction


class UGATITModel(Model):
    """Both generators of a U-GAT-IT model (either may be absent when only one direction was loaded): a
    :class:`~ugatit_cli.families.base.Model` whose ``generators`` (= ``nets``) are keyed by direction."""

    def __init__(self, config: UGATITConfig, generators: Mapping[str, Any] | None = None,
                 card: Mapping[str, Any] | None = None, weights_dtype: str = "float32"):
        super().__init__(FAMILY, config, generators, card, weights_dtype)


class UGATITTranslator(Translator):
    """One generator at one size; ``heatmap`` also writes its attention map."""

    def __init__(self, generator, size: int, outputs: tuple[OutputSpec, ...]):
        self.generator, self._size, self.outputs = generator, size, outputs

    @property
    def size(self) -> int:
        return self._size

    def modules(self):
        return [self.generator]

    def forward(self, x, extras):
        image, _, attention = self.generator(x)  # (B, 3, H, W), (B, 2), (B, 1, H/4, W/4)
        return {"image": image, "heatmap": attention}


class UGATITFamily(Family):
    name = "ugatit"
    title = "U-GAT-IT"
    model_config = UGATITConfig
    hyper_params = UGATITHyperParams
    run_defaults = RUN_DEFAULTS
    directions = DIRECTIONS
    default_direction = "a2b"
    translate_options = (TranslateOption("heatmap", bool, "Also write the attention map as NAME_heatmap.png."),)
    data_layout = DATA_LAYOUT
    hub_columns = HUB_COLUMNS
    cli_help = {
        "model": "official *_params_*.pt or TF checkpoint",
        "direction": "a2b or b2a; for selfie2anime, a2b is selfie -> anime",
        "size": "light models: any multiple of 4 from 16 to 4096",
        "init_from": "official *_params_*.pt",
        "eval_direction": "a2b: translations of testA vs testB; b2a: of testB vs testA; or both",
        "eval_data": "testA/, testB/",
    }
    tags = ("u-gat-it", "gan", "image-to-image", "pytorch")
    paper_url = "https://arxiv.org/abs/1907.10830"
    card_summary = "A [U-GAT-IT](https://arxiv.org/abs/1907.10830) image-to-image translation model"
    card_use = USE
    card_citation = CITATION
    trained_nets = GENERATOR_NAMES

    # -- networks and model folders --

    def weight_files(self, config):
        return {d: weights_name(d) for d in DIRECTIONS}

    def keys_for(self, directions):
        return DIRECTIONS if directions is None else tuple(check_direction(d) for d in directions)

    def build_net(self, config, key):
        from .networks import Generator

        return Generator(config)

    def describe_file(self, key):
        return f"generator {key} ({'A -> B' if key == 'a2b' else 'B -> A'})"

    @property
    def sources(self) -> Sequence[LocalSource]:
        from .importers.tf_checkpoint import is_tf_checkpoint

        return [
            LocalSource("official PyTorch checkpoint", lambda p: p.is_file() and p.suffix == ".pt",
                        _load_official_pytorch),
            LocalSource("official TensorFlow checkpoint (folder, prefix, .index, .data-*, .meta or checkpoint file)",
                        is_tf_checkpoint, _load_tf),
        ]

    def registered_models(self):
        from .importers.tf_hub import SELFIE2ANIME

        return [RegisteredModel(
            name="selfie2anime",
            description="Official U-GAT-IT selfie->anime (full, 256 px, ch 64, 1M iterations); a2b = selfie->anime",
            origin=f"{SELFIE2ANIME.url} (official TensorFlow checkpoint; one generator fetched and converted on "
                   "first use)",
            resolve=SELFIE2ANIME.resolve, family=self.name, local_folder=SELFIE2ANIME.converted_folder)]

    # -- translation, export, evaluation --

    extra_outputs = (OutputSpec("heatmap", "_heatmap", "jet"),)

    def outputs(self, options):
        return (OutputSpec("image"), *(self.extra_outputs if options.get("heatmap") else ()))

    def translator(self, model, direction, size, options):
        direction = check_direction(direction or self.default_direction)
        if direction not in model.nets:
            raise UserError(f"the model holds no generator for {direction}")
        return UGATITTranslator(model.nets[direction], model.config.check_size(size), self.outputs(options))

    def graph_translator(self, config, direction, size, options):
        # the image in, the image (and attention map) out: the default reading, feeds and outputs need no network
        return UGATITTranslator(None, config.check_size(size), self.outputs(options))

    def onnx_io(self, model, key):
        import torch

        config = model.config
        # Batch 2, not 1: torch.export specialises sizes of 0 and 1, which would fix the batch dimension.
        example = torch.zeros(2, config.img_ch, config.img_size, config.img_size)
        # the batch; for light models also height and width, which their pooled gamma/beta MLP does not fix
        # (a full model's MLP reads the whole map, so its size is the training size)
        axes = {0: "batch", 2: "height", 3: "width"} if config.dynamic_sides() else {0: "batch"}
        # both directions are Generator(config): one trace, two sets of weights
        return OnnxIO(model.nets[key], (example,), (ONNX_INPUT,), ONNX_OUTPUTS, {ONNX_INPUT: axes}, multiple=4,
                      graph="generator")

    def onnx_name(self, key):
        return f"generator_{key}.onnx"

    def eval_pairs(self, data_dir, directions):
        pairs = []
        for d in self.keys_for(directions):
            source, real = (Path(data_dir) / name for name in TEST_FOLDERS[d])
            for folder in (source, real):
                if not folder.is_dir():
                    raise UserError(f"{data_dir}: no {folder.name}/ folder (expected the official layout testA/ "
                                    "testB/)")
            pairs.append(EvalPair(d, source, real, d))
        return pairs

    # -- training --

    def scan_data(self, data_dir):
        from .data import scan_training_data

        return scan_training_data(data_dir)

    def loader(self, data, run, hyper, start, stop, rank, world_size, pin_memory):
        from ...data.streams import TrainingStreams, training_loader

        streams = TrainingStreams(data.train, hyper.size, run.batch_size, run.seed, rank, world_size)
        return training_loader(streams, start, stop, run.workers, pin_memory=pin_memory)

    def sample_batch(self, data, hyper):
        """The same images every time, so that grids compare across iterations: the first training images,
        then the first test images, per domain."""
        import torch

        from ...data.streams import list_images, sample_images

        return {s: torch.cat([sample_images(data.train[s], hyper.size, SAMPLE_COUNT),
                              sample_images(list_images(data.test[s]) if data.test[s] else [], hyper.size,
                                            SAMPLE_COUNT)])
                for s in TRAIN_FOLDERS}

    def model_config_for(self, hyper):
        return hyper.model_config()

    def schedule_note(self, run, hyper):
        # U-GAT-IT's decay is the official decay_flag: always the second half of the run, whatever its length
        if hyper.decay:
            return (f"the learning rate decays linearly to 0 over the second half of the new length, from "
                    f"iteration {run.iterations // 2}")
        return None

    def trainer(self, run, hyper, device, distributed):
        from .trainer import Trainer

        return Trainer(TrainConfig.combine(run, hyper), device, distributed=distributed)

    def can_init_from(self, path):
        return path.is_file() and path.suffix == ".pt"

    def with_training_size(self, model, size):
        """Any multiple of 4 for a light model (official light checkpoints do not store it); only its own for a
        full one (its gamma/beta MLP is sized by it)."""
        import dataclasses

        if not model.config.light:
            if size != model.config.img_size:
                raise UserError(f"--size {size}: this full model was trained at {model.config.img_size} px (its "
                                "gamma/beta MLP is sized by it)")
            return model
        try:
            config = dataclasses.replace(model.config, img_size=size)
        except ValueError as exc:
            raise UserError(f"--size {size}: {exc}") from None
        for generator in model.nets.values():
            generator.config = config
        card = dict(model.card)
        card.pop("config_notes", None)
        source = card.get("source", "").split(ASSUMED_NOTE)[0]
        card["source"] = source + f" Training size {size} px as stated at export."
        return model.with_(config=config, card=card)


ASSUMED_NOTE = " A light checkpoint does not store its training size"


def assume_training_size(model: Model, origin: str) -> Model:
    """A light model read from a checkpoint that does not store its training size (official PyTorch and TF
    light checkpoints): say once that ``img_size`` is assumed, and record it in the model card and
    ``config.json`` (``img_size_assumed``); ``export --size`` records the real one instead."""
    import warnings

    size = model.config.img_size
    warnings.warn(f"{origin}: a light checkpoint does not store its training size; {size} px is assumed "
                  "(translate --size N runs at another size; export --size N records the real one)", stacklevel=2)
    model.card["config_notes"] = {"img_size_assumed": True}
    model.card["source"] = model.card.get("source", "") + f"{ASSUMED_NOTE}: `img_size` {size} is assumed, not known."
    return model


def _load_official_pytorch(path: Path, directions: Sequence[str] | None) -> Model:
    from ..model_folder import net_from_state
    from .importers.official_pytorch import load_official_checkpoint

    config, states = load_official_checkpoint(path)
    generators = {}
    for direction in FAMILY.keys_for(directions):
        name = GENERATOR_NAMES[direction]
        if name not in states:
            raise UserError(f"{path}: checkpoint has no {name} (direction {direction})")
        generators[direction] = net_from_state(FAMILY, config, direction, states[name], origin=f"{path} [{name}]")
    source = (f"Converted from the official U-GAT-IT PyTorch checkpoint `{path.name}` (znxlwm/UGATIT-pytorch); "
              "hyper-parameters read from its tensor shapes.")
    model = UGATITModel(config, generators, card={"source": source})
    return assume_training_size(model, str(path)) if config.light else model


def _load_tf(path: Path, directions: Sequence[str] | None) -> Model:
    from .importers.tf_convert import load_tf_checkpoint

    return load_tf_checkpoint(path, FAMILY.keys_for(directions))


FAMILY = UGATITFamily()
