"""pix2pixHD as a model family: what the shared layers ask of it (see :mod:`ugatit_cli.families.base`).

Wang et al., "High-Resolution Image Synthesis and Semantic Manipulation with Conditional GANs", CVPR 2018
(https://arxiv.org/abs/1711.11585); official code NVIDIA/pix2pixHD (BSD).

- networks: ``netG`` (global generator or local enhancer), with instance features also ``netE`` (the
  encoder) and ``clusters`` (the per-class k-means centres of the training set's instance features, computed
  when the run's last iteration is done; :mod:`.features`); a model folder holds ``generator.safetensors``
  (+ ``encoder.safetensors`` + ``feature_clusters.safetensors``); training adds ``netD`` (the multi-scale
  discriminator);
- data: ``train_label/ train_img/ [train_inst/]`` (``train_A/ train_B/`` with ``--label-nc 0``); ``eval``
  translates ``test_label/`` (+ ``test_inst/``) and compares with ``test_img/``;
- MODEL may be an official checkpoint: ``latest_net_G.pth``, ``N_net_G.pth`` or their ``checkpoints/NAME/``
  folder, with ``opt.txt`` beside it.

Only dataclasses are imported at module level: ``ugatit --help`` imports this to list the options.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    TranslateOption,
    Translator,
)
from .config import Pix2PixHDConfig
from .hyper import RUN_DEFAULTS, Pix2PixHDHyperParams

WEIGHT_FILES = {"netG": "generator.safetensors", "netE": "encoder.safetensors",
                "clusters": "feature_clusters.safetensors"}
DATA_LAYOUT = ("train_label/, train_img/ and train_inst/ (none with --no-instance; train_A/ train_B/ with "
               "--label-nc 0), and test_* for samples and eval, like the official datasets")
SAMPLE_COUNT = 4
#: a Hub dataset's label-map, photo and (optional) instance-map columns, one example per row
HUB_COLUMNS = HubColumns(
    roles={"label": ("label", "label_map", "labels", "segmentation", "semantic", "conditioning_image"),
           "image": ("image", "photo", "img", "target"), "inst": ("instance", "inst", "instance_map", "instances")},
    train={"label": "train_label", "image": "train_img", "inst": "train_inst"},
    test={"label": "test_label", "image": "test_img", "inst": "test_inst"}, optional=("inst",), paired=True)
#: with --label-nc 0 the inputs are photos too: train_A/ train_B/ (imageA/imageB, input/target columns)
HUB_PHOTO_COLUMNS = HubColumns(
    roles={"label": ("input", "input_image", "source", "source_image", "A"),
           "image": ("target", "target_image", "output", "output_image", "B"),
           "inst": ("instance", "inst", "instance_map", "instances")},
    train={"label": "train_A", "image": "train_B", "inst": "train_inst"},
    test={"label": "test_A", "image": "test_B", "inst": "test_inst"}, optional=("inst",), paired=True)
CITATION = """## Citation

```bibtex
@inproceedings{wang2018pix2pixHD,
  title     = {High-Resolution Image Synthesis and Semantic Manipulation with Conditional GANs},
  author    = {Ting-Chun Wang and Ming-Yu Liu and Jun-Yan Zhu and Andrew Tao and Jan Kautz and Bryan Catanzaro},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2018}
}
```
"""
USE = """## Use

```bash
pip install ugatit-cli
ugatit translate label_maps/ --model {{ model_id }} {% if instance_maps -%}
--instance-maps instance_maps/ {% endif -%}
--output photos/
```

Label maps are single-channel PNGs of class ids (0 to {{ label_nc - 1 }}); each runs at its own size rounded
to a multiple of {{ size_multiple }} (labels{% if instance_maps %} and instance maps{% endif %} nearest), as
the official `test.py --resize_or_crop none`.
{% if features %}
The model uses instance features (feature length {{ feat_num }}): by default each instance gets one of its
class's k-means centres (`feature_clusters.safetensors`: `centres[class, k]` for `k < counts[class]`), drawn at
random with `--seed N` (default 0), or centre K with `--feature-cluster K`; `--encode-image photos/` takes the
features of real photos instead (the encoder, `encoder.safetensors`).
{% if onnx %}`generator.onnx` takes them as its input `feat` (B x {{ feat_num }} x H x W, each instance filled
with one centre of its class).{% endif %}
{% endif %}
"""


def _rgb_layout(root: Path) -> bool:
    """Whether DATA_DIR holds photo pairs (train_A/ train_B/, for --label-nc 0) rather than label maps."""
    return (root / "train_A").is_dir() and not (root / "train_label").is_dir()


@dataclass
class Pix2PixHDData:
    """The training pairs found in DATA_DIR (checked), and the test pairs when the test folders exist."""

    root: Path
    train: list[Any]
    test: list[Any] = field(default_factory=list)
    #: what the scan found wrong with the files (``data.DataProblem``), raised with the settings' checks
    problems: list[Any] = field(default_factory=list)

    def relative(self) -> dict[str, list[str]]:
        rel = {"label": [s.label.relative_to(self.root).as_posix() for s in self.train],
               "image": [s.image.relative_to(self.root).as_posix() for s in self.train if s.image is not None]}
        if self.train and all(s.inst is not None for s in self.train):  # not when unused ones lack partners
            rel["inst"] = [s.inst.relative_to(self.root).as_posix() for s in self.train]
        return rel


class Pix2PixHDModel(Model):
    """netG (and with instance features netE and the ``clusters`` centres) of a pix2pixHD model."""

    def __init__(self, config: Pix2PixHDConfig, nets=None, card=None, weights_dtype: str = "float32"):
        super().__init__(FAMILY, config, nets, card, weights_dtype)


class Pix2PixHDTranslator(Translator):
    """Label maps (and instance maps) to photos as the official ``test.py``: each map at its own size rounded to
    the generator's side multiple, or scaled to ``--size`` wide first; :meth:`read` reads the label map and
    the instance map as ids (labels and instances NEAREST, RGB inputs BICUBIC) with NumPy (:mod:`.maps`).

    ``nets``: the model's networks (``netG``; with instance features ``netE`` and ``clusters``); empty for the
    graph translator of a model without instance features, whose reading, ONNX feeds and outputs need none
    (:meth:`Pix2PixHDFamily.graph_translator`). UserError for options that do not fit the model."""

    outputs = (OutputSpec("image"),)

    def __init__(self, config: Pix2PixHDConfig, nets: Mapping[str, Any], width: int, options):
        self.config = config
        self.net_g = nets.get("netG")
        self.net_e = nets.get("netE")
        self.width = width or None
        self.instance_maps = options.get("instance_maps")
        needs_instances = not self.config.no_instance or self.config.instance_feat
        if needs_instances and self.instance_maps is None:
            raise UserError("this pix2pixHD model takes instance maps: give --instance-maps DIR (the folder of "
                            "instance-id PNGs named like the label maps)")
        if self.instance_maps is not None and not Path(self.instance_maps).is_dir():
            raise UserError(f"{self.instance_maps}: --instance-maps must be a folder")
        self.clusters, self.photos, self.choice = None, None, None
        self.seed = int(options.get("seed") or 0)
        if self.config.use_features:
            self._feature_source(nets, options)
        else:
            given = [o for o in ("feature_clusters", "feature_cluster", "encode_image") if options.get(o) is not None]
            if given:
                raise UserError(f"--{given[0].replace('_', '-')} applies to pix2pixHD models trained with instance "
                                f"features (--instance-feat or --label-feat); this one has none")

    def _feature_source(self, nets: Mapping[str, Any], options) -> None:
        """Where the feature map comes from (official ``inference``): the encoder on a real photo
        (``--encode-image DIR``, official ``--use_encoded_image``), else one cluster centre per instance from
        ``--feature-clusters FILE`` or the model's own centres (the official test's default)."""
        from .official import read_feature_clusters

        photos, path = options.get("encode_image"), options.get("feature_clusters")
        if photos is not None:
            if path is not None or options.get("feature_cluster") is not None:
                raise UserError("--encode-image takes the features from the photos: drop --feature-clusters and "
                                "--feature-cluster")
            if self.net_e is None:
                raise UserError("--encode-image needs the model's encoder (netE), and this model has none")
            if not Path(photos).is_dir():
                raise UserError(f"{photos}: --encode-image must be a folder of photos named like the label maps")
            self.photos = Path(photos)
            return
        if path is not None:
            self.clusters = read_feature_clusters(path, self.config.feat_num)
        else:
            stored = nets.get("clusters")
            if stored is None or stored.empty:
                raise UserError("this pix2pixHD model uses instance features but holds no cluster centres (its run "
                                "has not finished, or it was converted without them): give --feature-clusters FILE "
                                "(.npz) or --encode-image PHOTO_DIR")
            self.clusters = stored.as_dict()
        choice = options.get("feature_cluster")
        if choice is not None and str(choice) != "random":
            text = str(choice)
            if not text.isdigit():
                raise UserError(f"--feature-cluster must be random or a cluster index K >= 0, got {text!r}")
            self.choice = int(text)

    @property
    def size(self) -> int:
        return self.width or 0  # 0: each map at its own size (read() decides)

    def modules(self):
        return [self.net_g] + ([self.net_e] if self.net_e is not None else [])

    def read(self, source):
        """The label map (ids, or the RGB input for label_nc 0) and instance map of ``source`` at the size the
        model runs at, and the map's own (width, height): :func:`.maps.prepare_arrays`, without a batch axis."""
        from .maps import find_instance_map, find_photo, prepare_arrays

        inst = None
        if self.instance_maps is not None and (not self.config.no_instance or self.config.instance_feat):
            inst = find_instance_map(self.instance_maps, source)
        photo = find_photo(self.photos, source) if self.photos is not None else None
        return prepare_arrays(self.config, source, inst, photo_path=photo, width=self.width)

    def forward(self, x, extras):
        from .inference import generate

        return {"image": generate(self.config, self.net_g, extras, self.net_e, self.clusters, seed=self.seed,
                                  choice=self.choice)}

    def can_feed_onnx(self, input_names):
        """Not a graph that takes the feature map when the features come from photos (``--encode-image``: the
        encoder runs with PyTorch); ``auto`` then runs PyTorch."""
        return not ("feat" in input_names and self.clusters is None)

    def onnx_feeds(self, x, extras, input_names):
        """``label`` and ``inst`` as they are; with instance features also ``feat``, the cluster centres drawn as
        :meth:`forward` draws them (same seed), since the graph takes the feature map as an input."""
        feeds = {name: extras[name] for name in input_names if name in extras}
        if "feat" in input_names:
            from .features import sample_feature_map

            if self.clusters is None:
                raise UserError("this pix2pixHD model uses instance features: give --feature-clusters FILE")
            regions = extras["label"] if self.config.label_feat else extras["inst"]
            feeds["feat"] = sample_feature_map(self.clusters, regions, self.config.feat_num, seed=self.seed,
                                               choice=self.choice)
        return super().onnx_feeds(x, {**extras, **feeds}, input_names)


class Pix2PixHDFamily(Family):
    name = "pix2pixhd"
    title = "pix2pixHD"
    model_config = Pix2PixHDConfig
    hyper_params = Pix2PixHDHyperParams
    run_defaults = RUN_DEFAULTS
    translate_options = (
        TranslateOption("instance_maps", Path, "pix2pixHD: the folder of instance maps (same names as the label "
                                               "maps, or labelIds -> instanceIds).", metavar="DIR",
                        per_input=True),
        TranslateOption("feature_clusters", Path, "pix2pixHD with instance features: cluster centres (.npz; "
                                                  "an official .npy is refused with a conversion command) "
                                                  "instead of the model's own.", metavar="FILE"),
        TranslateOption("feature_cluster", str, "pix2pixHD with instance features: which centre each instance "
                                                "gets: random (one per instance, drawn with --seed; the official "
                                                "test's way, the default) or K (centre K of every class).",
                        metavar="random|K"),
        TranslateOption("seed", int, "pix2pixHD with instance features: seed of the random cluster centres "
                                     "(default 0; the same seed gives the same photo).", metavar="N"),
        TranslateOption("encode_image", Path, "pix2pixHD with instance features: take each instance's features "
                                              "from a real photo in DIR (named like the label map, or "
                                              "leftImg8bit for gtFine_labelIds) instead of the cluster centres.",
                        metavar="DIR", per_input=True),
    )
    data_layout = DATA_LAYOUT
    hub_columns = HUB_COLUMNS
    cli_help = {
        "model": "official pix2pixHD latest_net_G.pth / N_net_G.pth or its checkpoints/NAME/ folder (with opt.txt)",
        "size": "the width each label map is scaled to; by default each runs at its own size, rounded to the "
                "generator's multiple",
        "init_from": "official pix2pixHD N_net_G.pth (with the _net_D/_net_E files beside it)",
        "eval_data": "test_label/, test_img/ and test_inst/",
    }
    tags = ("pix2pixhd", "gan", "image-to-image", "semantic-image-synthesis", "pytorch")
    paper_url = "https://arxiv.org/abs/1711.11585"
    card_summary = "A [pix2pixHD](https://arxiv.org/abs/1711.11585) label-map-to-photo model"
    card_use = USE
    card_citation = CITATION
    trained_nets = {"netG": "netG", "netE": "netE", "clusters": "clusters"}

    # -- networks and model folders --

    def weight_files(self, config):
        if config is not None and not config.use_features:
            return {"netG": WEIGHT_FILES["netG"]}
        return dict(WEIGHT_FILES)

    def keys_for(self, directions):
        if directions:
            raise UserError("--direction does not apply to pix2pixHD models (they have one way)")
        return tuple(WEIGHT_FILES)  # a model without instance features has netG alone (weight_files)

    def build_net(self, config, key):
        from .features import FeatureClusters
        from .networks import build_encoder, build_generator

        if key == "clusters":
            return FeatureClusters(config.label_nc, config.n_clusters, config.feat_num)
        return build_encoder(config) if key == "netE" else build_generator(config)

    def describe_file(self, key):
        return {"netG": "generator (netG)", "netE": "instance-feature encoder (netE)",
                "clusters": "per-class k-means centres of the training set's instance features"}[key]

    @property
    def sources(self) -> Sequence[LocalSource]:
        from .official import is_official_checkpoint

        return [LocalSource("official pix2pixHD checkpoint (latest_net_G.pth, N_net_G.pth or its folder)",
                            _safe(is_official_checkpoint), _load_official)]

    # -- translation, export and evaluation --

    def translator(self, model, direction, size, options):
        return Pix2PixHDTranslator(model.config, model.nets, _width(model.config, direction, size), options)

    def graph_translator(self, config, direction, size, options):
        # label and instance maps in, the image out: reading (NumPy), feeds and outputs need no network. Instance
        # features need the encoder or torch to draw the cluster centres' feature map: those models load
        if config.use_features:
            return None
        return Pix2PixHDTranslator(config, {}, _width(config, direction, size), options)

    def onnx_io(self, model, key):
        """``generator.onnx``: label ids (+ instance ids) (+ the feature map ``feat``, B x feat_num x H x W, for
        models with instance features: an input, filled from the centres in ``feature_clusters.safetensors``
        beside it, or from the encoder). The encoder and the centres are stored as safetensors beside the graph
        (None here), not as graphs."""
        import torch

        from .graph import LabelToImage

        if key != "netG":
            return None

        config = model.config
        m = config.size_multiple
        side = 4 * m  # the shared exporter's smallest dynamic side
        graph = LabelToImage(config, model.nets["netG"]).eval()
        label = torch.zeros(2, 1 if config.label_nc else config.input_nc, side, side)
        example = [label]
        names = ["label"]
        if not config.no_instance:
            example.append(torch.zeros(2, 1, side, side))
            names.append("inst")
        if config.use_features:
            example.append(torch.zeros(2, config.feat_num, side, side))
            names.append("feat")
        axes = {0: "batch", 2: "height", 3: "width"}
        inputs = "`label` (float class ids, B x 1 x H x W)" + ("" if config.no_instance else ", `inst` (instance ids)")
        if config.use_features:
            inputs += (f", `feat` (B x {config.feat_num} x H x W: each instance filled with one centre of its class "
                       f"from `feature_clusters.safetensors`, `centres[class, k]` for k < `counts[class]`)")
        return OnnxIO(graph, tuple(example), tuple(names), ("image",), {n: axes for n in names}, multiple=m,
                      description=f"inputs {inputs}; output `image` (B x 3 x H x W in [-1, 1]); H, W multiples "
                                  f"of {m}")

    def onnx_name(self, key):
        return "generator.onnx"

    def eval_pairs(self, data_dir, directions):
        if directions:
            raise UserError("--direction does not apply to pix2pixHD models")
        data_dir = Path(data_dir)
        label = data_dir / "test_label" if (data_dir / "test_label").is_dir() else data_dir / "test_A"
        real = data_dir / "test_img" if label.name == "test_label" else data_dir / "test_B"
        for folder in (label, real):
            if not folder.is_dir():
                raise UserError(f"{data_dir}: no {folder.name}/ folder (expected the official layout test_label/ "
                                f"test_img/ [test_inst/])")
        inst = data_dir / "test_inst"
        options = {"instance_maps": inst} if inst.is_dir() else {}
        return [EvalPair("label2photo", label, real, None, options)]

    def paired_scores(self, pair, translated):
        """PSNR and SSIM of each translation against its real photo (paired by sorted order, as the official
        loader pairs test_label/ and test_img/), the translation resized BICUBIC to the photo's size when the
        generator's rounding changed it."""
        from PIL import Image

        from ...core.images import open_rgb
        from .data import _image_files
        from .paired_metrics import paired_scores

        labels, reals = _image_files(pair.source), _image_files(pair.real)
        if len(labels) != len(reals):
            raise UserError(f"{pair.source} has {len(labels)} images but {pair.real} has {len(reals)}; PSNR and "
                            f"SSIM pair them in sorted order")
        import numpy as np

        images = []
        for label, real_path in zip(labels, reals, strict=True):
            fake_path = translated / label.relative_to(pair.source).with_suffix(".png")
            if not fake_path.is_file():
                continue  # a label map that failed is reported by translate
            real = open_rgb(real_path)
            fake = open_rgb(fake_path)
            if fake.size != real.size:
                fake = fake.resize(real.size, Image.Resampling.BICUBIC)
            images.append((np.asarray(fake), np.asarray(real)))
        return paired_scores(images).summary() if images else None

    # -- training --

    def scan_data(self, data_dir):
        """Pair and decode every training file (and the test files when their folders exist). The problems
        found are kept, not raised: :meth:`check_data`, which knows the settings (whether the ids fit
        ``--label-nc``, the sizes the transform makes), lists them all with its own in one block."""
        from .data import scan_dataset

        root = Path(data_dir)
        if not root.is_dir():
            raise UserError(f"{root}: no such data folder")
        rgb = _rgb_layout(root)
        scan = Pix2PixHDConfig(label_nc=0 if rgb else 65536, no_instance=not (root / "train_inst").is_dir())
        problems = []
        train = scan_dataset(root, scan, "train", problems=problems)
        test_names = ("test_A", "test_B") if rgb else ("test_label", "test_img")
        test = []
        if all((root / n).is_dir() for n in test_names):
            test_scan = Pix2PixHDConfig(label_nc=scan.label_nc, no_instance=not (root / "test_inst").is_dir())
            test = scan_dataset(root, test_scan, "test", problems=problems)
        return Pix2PixHDData(root, train, test, problems)

    def hub_columns_for(self, hyper):
        return HUB_PHOTO_COLUMNS if hyper.label_nc == 0 else HUB_COLUMNS

    def check_data(self, data, hyper):
        self._checked(data, hyper)

    def _checked(self, data: Pix2PixHDData, hyper) -> Pix2PixHDData:
        """The scanned data for these settings: label ids < label_nc, instance maps present (or dropped with
        --no-instance), sizes the generator takes; otherwise one UserError block listing these problems with
        those of the scan (``data.raise_problems``). A layout that does not fit the settings (the folders of
        another --label-nc, no train_inst/) is one line."""
        import dataclasses

        from .data import label_id_problems, raise_problems, training_size_problems

        train_cfg = hyper.train_config(_Run(max(1, hyper.niter_decay or 0), 1, 0))  # any length that fits niter_decay
        model = train_cfg.model
        if (model.label_nc == 0) != _rgb_layout(data.root):
            wanted = "train_A/ train_B/" if model.label_nc == 0 else "train_label/ train_img/"
            raise UserError(f"{data.root}: --label-nc {model.label_nc} needs the folders {wanted}")
        needs_inst = not model.no_instance or model.instance_feat
        if needs_inst and not (data.root / "train_inst").is_dir():
            raise UserError(f"{data.root / 'train_inst'}: no such folder; train with --no-instance, or add the "
                            f"instance maps")
        problems = [p for p in data.problems if needs_inst or p.role != "inst"]  # unused instance maps may be bad
        if model.label_nc:
            problems += label_id_problems(data.train + data.test, model.label_nc, data.root)
        if not needs_inst:
            data = Pix2PixHDData(data.root, [dataclasses.replace(s, inst=None) for s in data.train],
                                 [dataclasses.replace(s, inst=None) for s in data.test])
        elif data.test and data.test[0].inst is None:
            data = Pix2PixHDData(data.root, data.train, [])  # test pairs without instance maps: no samples of them
        problems += training_size_problems(train_cfg, data.train, data.root)
        raise_problems(data.root, problems)
        return data

    def loader(self, data, run, hyper, start, stop, rank, world_size, pin_memory):
        from ...data.streams import training_loader
        from .data import PairedBatches

        data = self._checked(data, hyper)
        batches = PairedBatches(hyper.train_config(run), data.train, rank, world_size)
        return training_loader(batches, start, stop, run.workers, pin_memory=pin_memory)

    def sample_batch(self, data, hyper):
        import torch

        from .data import TransformParams, load_sample, output_size

        data = self._checked(data, hyper)
        train_cfg = hyper.train_config(_Run(max(1, hyper.niter_decay or 0), 1, 0))  # any length that fits niter_decay
        items = []
        for sample in data.train[:SAMPLE_COUNT] + data.test[:SAMPLE_COUNT]:
            size = output_size(train_cfg, sample.size)
            if items and size != tuple(items[0]["image"].shape[-1:-3:-1]):
                continue  # one grid, one size
            params = TransformParams(size, None, False)
            items.append(load_sample(train_cfg, sample, params))
        return {key: torch.stack([item[key] for item in items]) for key in items[0]} if items else None

    def model_config_for(self, hyper):
        return hyper.model_config()

    def trainer(self, run, hyper, device, distributed):
        from .step import Pix2PixHDTrainer

        return Pix2PixHDTrainer(hyper.train_config(run), device, precision=run.precision, ema=run.ema,
                                distributed=distributed)

    resumable_settings = frozenset({"niter_decay"})

    def check_settings(self, run, hyper, resumed=False):
        """The phases against ``run.iterations`` (what to pass instead), then everything the trainer checks."""
        recorded = " (the run's, recorded when it started)" if resumed else ""
        if hyper.niter_decay is not None and hyper.niter_decay > run.iterations:
            raise ValueError(f"--niter-decay {hyper.niter_decay}{recorded} is longer than --iterations "
                             f"{run.iterations}: pass --niter-decay {run.iterations} or less, or --iterations "
                             f"{hyper.niter_decay} or more")
        if hyper.niter_fix_global > run.iterations:
            shorter = "" if resumed else f"--niter-fix-global {run.iterations} or less, or "
            raise ValueError(f"--niter-fix-global {hyper.niter_fix_global}{recorded} is longer than --iterations "
                             f"{run.iterations}: pass {shorter}--iterations {hyper.niter_fix_global} or more")
        hyper.train_config(run)

    def resolved_schedule(self, run, hyper):
        return {"niter_decay": run.iterations // 2 if hyper.niter_decay is None else hyper.niter_decay}

    def schedule_note(self, run, hyper):
        decay = run.iterations // 2 if hyper.niter_decay is None else hyper.niter_decay
        return (f"the learning rate decays over the last {decay} iterations, from iteration "
                f"{run.iterations - decay} (the run's --niter-decay)")

    def finish_training(self, trainer, data, run, hyper, device, rank, world_size):
        """With instance features: encode the training set and cluster each class's instance features (official
        ``encode_features.py``), into the trainer's ``clusters``; each rank encodes its share, every rank
        clusters all of them (the same centres everywhere)."""
        train_cfg = hyper.train_config(run)
        if not train_cfg.model.use_features:
            return None
        from .features import cluster_vectors, encode_training_set

        data = self._checked(data, hyper)
        found = encode_training_set(trainer.nets["netE"], train_cfg, data.train, train_cfg.model.label_feat,
                                    device, rank, world_size)
        if world_size > 1:
            import torch.distributed as dist

            shares = [None] * world_size
            dist.all_gather_object(shares, found)
            found = sorted((v for share in shares for v in share), key=lambda v: v[0])
        clusters = cluster_vectors([v[1:] for v in found], train_cfg.model.n_clusters, seed=train_cfg.seed)
        trainer.nets["clusters"].set(clusters)
        return (f"feature clusters: {sum(len(c) for c in clusters.values())} centres over {len(clusters)} classes "
                f"from {len(found)} instances of {len(data.train)} training images")

    def card_facts(self, model):
        config = model.config
        return {"size_multiple": config.size_multiple, "label_nc": max(config.label_nc, 1),
                "instance_maps": not config.no_instance or config.instance_feat, "features": config.use_features,
                "feat_num": config.feat_num}

    def can_init_from(self, path):
        from .official import is_official_checkpoint

        return _safe(is_official_checkpoint)(Path(path))


def _width(config: Pix2PixHDConfig, direction: str | None, size: int | None) -> int:
    """The width ``--size`` scales each map to (0 without it: each at its own size); UserError for a direction
    or a size that does not fit."""
    if direction is not None:
        raise UserError("--direction does not apply to pix2pixHD models (they have one way)")
    try:
        return config.check_size(size)
    except ValueError as exc:
        raise UserError(str(exc)) from None


@dataclass
class _Run:
    iterations: int
    batch_size: int
    seed: int


def _safe(check):
    def matches(path: Path) -> bool:
        try:
            return check(path)
        except OSError:
            return False
    return matches


def _load_official(path: Path, keys: Sequence[str]) -> Model:
    from .official import read_official

    official = read_official(path)
    net_g, net_e = official.build()
    nets = {"netG": net_g}
    if net_e is not None:
        nets["netE"] = net_e
        converted = official.generator_path.with_name(f"features_clustered_{official.config.n_clusters:03d}.npz")
        if converted.is_file():  # the official cluster file, converted to .npz (read_feature_clusters)
            from .features import FeatureClusters
            from .official import read_feature_clusters

            clusters = FeatureClusters(official.config.label_nc, official.config.n_clusters, official.config.feat_num)
            try:
                clusters.set(read_feature_clusters(converted, official.config.feat_num))
            except ValueError as exc:
                raise UserError(f"{converted}: {exc}") from None
            nets["clusters"] = clusters
    source = (f"Converted from the official pix2pixHD checkpoint `{official.generator_path.name}` "
              f"(NVIDIA/pix2pixHD); options from {'its opt.txt' if official.opt_path else 'its tensor shapes'}.")
    return Pix2PixHDModel(official.config, nets, card={"source": source})


FAMILY = Pix2PixHDFamily()
