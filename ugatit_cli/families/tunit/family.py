"""TUNIT as a model family: what the shared layers ask of it (see :mod:`ugatit_cli.families.base`).

Baek et al., "Rethinking the Truly Unsupervised Image-to-Image Translation", ICCV 2021
(https://arxiv.org/abs/2006.06500); official code clovaai/tunit.

- networks of a model folder: ``generator`` (G_EMA, ``generator.safetensors``), ``guiding`` (C_EMA, the guiding
  network: pseudo-domain logits and style codes, ``guiding_network.safetensors``) and ``styles`` (the mean style
  code of each pseudo-domain over the training images, ``style_codes.safetensors``); training adds C, G and the
  multi-task discriminator D (:mod:`.training`);
- ``translate`` needs ``--reference IMAGE`` (or a folder: every pair; ``--round-robin``: one reference per
  input) or ``--domain K``; ONNX: the generator takes ``input`` and ``style``, the guiding network gives
  ``logits`` and ``style``, the style codes stay a table (``style_codes.safetensors`` beside the graphs);
- data: one folder of images, read recursively; first-level subfolders are classes only for ``--p-semi`` and
  ``eval`` (cluster accuracy, mFID); ``cluster`` sorts images into pseudo-domains;
- MODEL may be an official ``model_N.ckpt`` (G_EMA_state_dict, C_EMA_state_dict; CC BY-NC).

Only dataclasses are imported at module level: ``ugatit --help`` imports this to list the options.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import UserError
from ..base import EvalPair, Family, HubColumns, LocalSource, Model, OnnxIO, OutputSpec, TranslateOption
from .config import TunitConfig
from .hyper import RUN_DEFAULTS, TunitOptions

WEIGHT_FILES = {"generator": "generator.safetensors", "guiding": "guiding_network.safetensors",
                "styles": "style_codes.safetensors"}
KEYS = tuple(WEIGHT_FILES)
#: the trainer's network each model-folder key comes from (EMA copies: ema_G, ema_C, ema_styles)
TRAINED_NETS = {"generator": "G", "guiding": "C", "styles": "styles"}
DATA_LAYOUT = "one folder of images (subfolders read too; their names are classes only for --p-semi and eval)"
SAMPLE_COUNT = 8
OFFICIAL_LICENCE = ("The official TUNIT checkpoints are released by NAVER Corp. for non-commercial use only "
                    "(CC BY-NC 4.0): so is this model.")
CITATION = """## Citation

```bibtex
@inproceedings{baek2021rethinking,
  title     = {Rethinking the Truly Unsupervised Image-to-Image Translation},
  author    = {Kyungjune Baek and Yunjey Choi and Youngjung Uh and Jaejun Yoo and Hyunjung Shim},
  booktitle = {IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2021}
}
```
"""
USE = """## Use
{% if onnx %}
ONNX opset {{ onnx.opset }}: `generator.onnx` takes `input` (float32 `B x 3 x H x W` in [-1, 1]) and `style`
(`B x {{ config.sty_dim }}`) and gives `image`; `guiding_network.onnx` takes `input` and gives `logits`
(`B x {{ config.k }}`, the pseudo-domains) and `style`; `style_codes.safetensors` holds `styles` (the mean `style`
of each pseudo-domain, `{{ config.k }} x {{ config.sty_dim }}`) and `counts` (training images per pseudo-domain).
The folder itself is a MODEL for `ugatit translate` (`--reference`, `--domain`) and `ugatit cluster`.
{% else %}
```bash
pip install ugatit-cli
ugatit translate photos/ --model {{ model_id }} --reference style.jpg --output translated/
{% set d = example_domain %}ugatit translate photos/ --model {{ model_id }} --domain {{ d }} --output domain{{ d }}/\
{%- if not domains_known %} --style-data photos/{% endif %}
ugatit cluster photos/ --model {{ model_id }} --output clusters/ --link
```
{% endif %}
The model sorts images into {{ config.k }} pseudo-domains it discovered without labels, and translates an image
into the style of a reference image or of a pseudo-domain (trained at {{ config.size }} px).

"""


class TunitFamily(Family):
    name = "tunit"
    title = "TUNIT"
    model_config = TunitConfig
    hyper_params = TunitOptions
    run_defaults = RUN_DEFAULTS
    translate_options = (
        TranslateOption("reference", Path, "TUNIT: translate into the style of this image; a folder: of each of its "
                                           "images (every pair, NAME_REFERENCE.png).", metavar="IMAGE|DIR"),
        TranslateOption("domain", int, "TUNIT: translate into the mean style of this pseudo-domain (0 to K-1).",
                        metavar="K"),
        TranslateOption("style_data", Path, "TUNIT, with --domain: compute the pseudo-domains' mean style codes from "
                                            "this folder of images (or one image) with the model's guiding network "
                                            "(models that store none, e.g. official checkpoints).", metavar="DIR"),
        TranslateOption("round_robin", bool, "TUNIT, with a --reference folder: one reference per input (picked by "
                                             "a hash of its path) instead of every pair."),
    )
    export_options = (
        TranslateOption("style_data", Path, "TUNIT: compute the pseudo-domains' mean style codes from this folder "
                                            "of images with the model's guiding network and store them in the "
                                            "export (models that store none, e.g. official checkpoints; replaces "
                                            "stored codes).", metavar="DIR"),
    )
    data_layout = DATA_LAYOUT
    #: a Hub dataset's image column at the top of DATA_DIR; a label column, if any, becomes class subfolders
    #: (read only with --p-semi > 0)
    hub_columns = HubColumns(roles={"image": ("image", "img", "photo", "picture")}, train={"image": "."},
                             classes=True)
    cli_help = {
        "model": "official TUNIT model_N.ckpt",
        "size": "a multiple of 2**log2(training size / 16), at least 32",
        "init_from": "official TUNIT model_N.ckpt",
        "eval_data": "a folder of images; class subfolders add cluster accuracy and mFID",
    }
    tags = ("tunit", "gan", "image-to-image", "unsupervised", "pytorch")
    paper_url = "https://arxiv.org/abs/2006.06500"
    card_summary = "A [TUNIT](https://arxiv.org/abs/2006.06500) unsupervised multi-domain translation model"
    card_use = USE
    card_citation = CITATION
    trained_nets = TRAINED_NETS

    # -- networks and model folders --

    def weight_files(self, config):
        return dict(WEIGHT_FILES)

    def keys_for(self, directions):
        if directions:
            raise UserError("--direction does not apply to TUNIT models (they have no directions)")
        return KEYS

    def build_net(self, config, key):
        from .inference import DomainStyles
        from .networks import build

        if key == "styles":
            return DomainStyles(config.k, config.sty_dim)
        return build(config, "G" if key == "generator" else "C")

    def describe_file(self, key):
        return {"generator": "generator (G_EMA)", "guiding": "guiding network (C_EMA): pseudo-domain logits and "
                "style codes", "styles": "mean style code of each pseudo-domain"}[key]

    @property
    def sources(self) -> Sequence[LocalSource]:
        from .official import looks_official

        return [LocalSource("official TUNIT checkpoint (model_N.ckpt)", looks_official, _load_official)]

    def can_init_from(self, path):
        from .official import looks_official

        return looks_official(Path(path))

    # -- translation --

    def check_options(self, options):
        options = super().check_options(options)
        reference, domain = options.get("reference"), options.get("domain")
        if reference is None and domain is None:
            raise UserError("a TUNIT model translates into the style of a reference or of a pseudo-domain: give "
                            "--reference IMAGE|DIR or --domain K")
        if reference is not None and domain is not None:
            raise UserError("give --reference or --domain, not both")
        if options.get("round_robin") and (reference is None or not Path(reference).is_dir()):
            raise UserError("--round-robin needs a --reference folder")
        if reference is not None:
            from .inference import reference_files

            reference_files(reference)  # exists and holds images
        return options

    def outputs(self, options):
        if options.get("reference") is not None and not options.get("round_robin"):
            from .inference import reference_specs

            return reference_specs(options["reference"])
        return (OutputSpec("image"),)

    def translator(self, model, direction, size, options):
        from .inference import TunitTranslator

        if direction is not None:
            raise UserError("--direction does not apply to TUNIT models (give --reference or --domain)")
        options = self.check_options(options)
        return TunitTranslator(model, model.config.check_size(size), options)

    def assigner(self, model, size):
        from .inference import TunitAssigner

        if "guiding" not in model.nets:
            raise UserError("the model holds no guiding network")
        return TunitAssigner(model.nets["guiding"], model.config.k, model.config.check_size(size))

    # -- export --

    def complete_model(self, model, options):
        """``--style-data DIR``: the model's ``styles`` computed from DIR's images (see
        :func:`~ugatit_cli.families.tunit.inference.styles_from_folder`); its card says so."""
        model = super().complete_model(model, options)
        folder = options.get("style_data")
        if folder is None:
            return model
        from .inference import styles_from_folder

        styles = styles_from_folder(model, folder)
        known = styles.known()
        counted = int(styles.counts.sum())
        note = (f"Per-domain style codes computed from {counted} image(s) of `{Path(folder).name}` with the model's "
                f"guiding network (pseudo-domains with images: {', '.join(map(str, known))}).")
        card = dict(model.card)
        card["source"] = f"{card['source']} {note}" if card.get("source") else note
        return model.with_(nets={**model.nets, "styles": styles}, card=card)

    def onnx_io(self, model, key):
        import torch

        from .inference import GuidingGraph

        config = model.config
        side = config.size
        image = torch.zeros(2, 3, side, side)
        axes = {0: "batch", 2: "height", 3: "width"}
        if key == "generator":
            m = config.content_stride
            return OnnxIO(model.nets["generator"], (image, torch.zeros(2, config.sty_dim)), ("input", "style"),
                          ("image",), {"input": axes, "style": {0: "batch"}}, multiple=m,
                          description=f"inputs `input` (B x 3 x H x W in [-1, 1]; H, W multiples of {m}) and "
                                      f"`style` (B x {config.sty_dim}); output `image` (B x 3 x H x W in [-1, 1])")
        if key == "guiding":
            return OnnxIO(GuidingGraph(model.nets["guiding"]).eval(), (image,), ("input",), ("logits", "style"),
                          {"input": axes}, multiple=8,
                          description=f"input `input` (B x 3 x H x W in [-1, 1]); outputs `logits` (B x {config.k}) "
                                      f"and `style` (B x {config.sty_dim})")
        # the style codes are a table, not a graph: style_codes.safetensors beside the graphs keeps the counts
        # that say which pseudo-domains hold images (translate --domain K of the export folder reads it)
        return None

    def onnx_net(self, config, key, run):
        from .inference import OnnxGuiding

        return OnnxGuiding(run).eval() if key == "guiding" else None

    def onnx_name(self, key):
        return Path(WEIGHT_FILES[key]).with_suffix(".onnx").name

    # -- model card and summaries --

    def card_facts(self, model):
        """``example_domain``: the pseudo-domain with the most training images (the card's ``--domain``
        example); ``domains_known``: whether the model stores style codes (official checkpoints: none)."""
        styles = model.nets.get("styles")
        known = styles.known() if styles is not None and not styles.counts.is_meta else []
        best = max(known, key=lambda i: int(styles.counts[i])) if known else 0
        return {"example_domain": best, "domains_known": bool(known)}

    def translate_example(self, checkpoint):
        """`` --domain K`` for the pseudo-domain of the checkpoint's style codes with the most training images
        (``--reference IMAGE`` when none can be read)."""
        from ..model_folder import read_safetensors

        try:
            counts = read_safetensors(Path(checkpoint) / "ema_styles.safetensors")["counts"]
        except Exception:  # no checkpoint, or codes not readable: a reference always works
            return " --reference IMAGE"
        return f" --domain {int(counts.argmax())}" if int(counts.max()) > 0 else " --reference IMAGE"

    # -- evaluation --

    def eval_pairs(self, data_dir, directions):
        """With class subfolders, the official mFID comparisons: per class c, the images of the other classes
        translated in the style of class c's images (one reference each) against class c's images. Without
        them nothing yet: :meth:`eval_plan` sorts the images with the model first."""
        from .data import scan_images

        if directions:
            raise UserError("--direction does not apply to TUNIT models")
        data = scan_images(data_dir)
        if data.labels is None:
            return []
        root = Path(data_dir)
        folders = [root / c for c in data.classes]
        return _domain_pairs(folders, data.classes)

    def eval_plan(self, model, data_dir, directions, workdir):
        from .data import scan_images

        pairs = self.eval_pairs(data_dir, directions)
        data = scan_images(data_dir)
        if data.labels is not None:
            return pairs
        files = [data.path(i) for i in range(len(data.files))]
        domains = _assign(model, files)
        folders, names = [], []
        for k in sorted({d for d in domains if d is not None}):
            folder = workdir / f"domain_{k}"
            for path, rel, d in zip(files, data.files, domains, strict=True):
                if d == k:
                    place(path, folder / rel, link=True)
            folders.append(folder)
            names.append(f"domain {k}")
        return _domain_pairs(folders, names)

    def eval_scores(self, model, data_dir, comparisons, device):
        from .cluster import cluster_accuracy
        from .data import scan_images

        scores: dict[str, float] = {}
        data = scan_images(data_dir)
        if data.labels is not None:
            files = [data.path(i) for i in range(len(data.files))]
            domains = _assign(model, files, device)
            kept = [(d, y) for d, y in zip(domains, data.labels, strict=True) if d is not None]
            if kept:
                result = cluster_accuracy([d for d, _ in kept], [y for _, y in kept], k=model.config.k,
                                          n_classes=len(data.classes))
                scores["cluster_accuracy"] = result.accuracy
        fids = [c.fid for c in comparisons if c.fid is not None]
        if fids and len(fids) == len(comparisons):
            scores["mFID"] = sum(fids) / len(fids)
        kids = [c.kid_mean for c in comparisons if c.kid_mean is not None]
        if kids and len(kids) == len(comparisons):
            scores["mKID_x100"] = 100 * sum(kids) / len(kids)
        return scores

    # -- training --

    def scan_data(self, data_dir):
        from .data import scan_images

        return _readable_only(scan_images(data_dir))

    def loader(self, data, run, hyper, start, stop, rank, world_size, pin_memory):
        from ...data.streams import training_loader
        from .training import TunitBatches

        batches = TunitBatches(data, _recipe(hyper, run), rank, world_size)
        return training_loader(batches, start, stop, run.workers, pin_memory=pin_memory)

    def sample_batch(self, data, hyper):
        """Up to 8 training images, evenly spaced in name order, through the test transform: the first 4 are
        the grids' sources, the others their references."""
        import numpy as np
        import torch

        from ...core.images import BadImageError, pixels_to_tensor
        from .inference import read_pixels

        n = len(data.files)
        picks = sorted(set(np.linspace(0, n - 1, min(n, SAMPLE_COUNT)).round().astype(int).tolist()))
        images = []
        for i in picks:
            try:
                images.append(read_pixels(data.path(i), hyper.size))
            except BadImageError:
                continue
        return pixels_to_tensor(torch.from_numpy(np.stack(images))).contiguous() if images else None

    def model_config_for(self, hyper):
        return hyper.model_config()

    def trainer(self, run, hyper, device, distributed):
        from .training import TunitRunTrainer

        if run.precision != "fp32":
            raise UserError(f"TUNIT training runs in fp32 (--precision {run.precision} is not supported for it yet)")
        if run.compile:
            raise UserError("--compile is not supported for TUNIT training yet")
        return TunitRunTrainer(_recipe(hyper, run), device, log_every=run.log_every, distributed=distributed)

    resumable_settings = frozenset({"warmup_iterations", "ema_start"})

    def check_settings(self, run, hyper, resumed=False):
        hyper.recipe(run)

    def resolved_schedule(self, run, hyper):
        recipe = _recipe(hyper, run)
        return {"warmup_iterations": recipe.warmup, "ema_start": recipe.ema_from}

    def schedule_note(self, run, hyper):
        """The phases; and, when the new length ends before G_EMA (the generator a run saves) takes G's weights,
        that it would stay untrained and what to pass (a run that only trains the guiding network is legitimate,
        so this is said, not refused)."""
        recipe = _recipe(hyper, run)
        note = (f"the guiding network trains alone for the first {recipe.warmup} iterations, G_EMA averages "
                f"from iteration {recipe.ema_from} (the run's --warmup-iterations and --ema-start)")
        if recipe.ema_from >= run.iterations:
            note += (f"; the run now ends before that: the generator it saves stays untrained (pass --iterations "
                     f"above {recipe.ema_from}, or --ema-start and --warmup-iterations below {run.iterations})")
        return note

    def attach_data(self, trainer, data, hyper):
        if hyper.p_semi > 0 and data.labels is None:
            raise UserError(f"{data.root}: --p-semi needs the images in class subfolders (two or more)")
        trainer.data = data


def _recipe(hyper: TunitOptions, run: Any):
    try:
        return hyper.recipe(run)
    except ValueError as exc:
        raise UserError(f"invalid TUNIT settings: {exc}") from None


def _domain_pairs(folders: list[Path], names: list[str]) -> list[EvalPair]:
    """Per folder with 2+ images: the other folders translated in its style (one of its images as the
    reference of each input) against its own images."""
    from .data import scan_images

    pairs = []
    for i, (real, name) in enumerate(zip(folders, names, strict=True)):
        others = [f for j, f in enumerate(folders) if j != i]
        if not others or len(scan_images(real).files) < 2:
            continue
        pairs.append(EvalPair(name, others[0], real, None, {"reference": real, "round_robin": True},
                              sources=tuple(others[1:])))
    return pairs


def _assign(model: Model, files: list[Path], device: Any = "auto") -> list[int | None]:
    """The pseudo-domain of each file (None for an unreadable one), the guiding network in eval mode."""
    import numpy as np
    import torch

    from ...core.devices import select_device
    from ...core.images import BadImageError, pixels_to_tensor
    from .cluster import assign
    from .inference import read_pixels

    guiding = model.nets["guiding"]
    target = select_device(device) if isinstance(device, str) else torch.device(device)
    guiding.to(target).eval()
    size = model.config.size
    readable, pixels = [], []
    for i, path in enumerate(files):
        try:
            pixels.append(read_pixels(path, size))
            readable.append(i)
        except BadImageError:
            continue
    out: list[int | None] = [None] * len(files)
    if not pixels:
        return out
    x = pixels_to_tensor(torch.from_numpy(np.stack(pixels)))
    domains, _ = assign(guiding, x)
    for i, d in zip(readable, domains.tolist(), strict=True):
        out[i] = int(d)
    return out


def place(source: Path, target: Path, link: bool) -> None:
    """``target`` becomes a symbolic link to ``source`` (absolute), or a copy of it (``link=False``, or where
    links cannot be made); written under a temporary name and renamed, so it is never half there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    if link:
        try:
            os.symlink(Path(source).resolve(), tmp)
        except OSError:
            link = False
    if not link:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)


def _readable_only(data):
    """The scanned data without the images that cannot be decoded (named in one warning); UserError when none
    is left."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from ...errors import ProcessingError
    from .data import TunitData, load_rgb

    def problem(rel: str) -> str | None:
        try:
            load_rgb(data.root / rel)
        except ProcessingError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(problem, data.files))
    bad = [p for p in problems if p is not None]
    if not bad:
        return data
    warnings.warn(f"skipping {len(bad)} unreadable training image(s): {'; '.join(bad)}", stacklevel=2)
    keep = [i for i, p in enumerate(problems) if p is None]
    if not keep:
        raise UserError(f"{data.root}: none of its {len(data.files)} images can be read")
    labels = [data.labels[i] for i in keep] if data.labels is not None else None
    return TunitData(data.root, [data.files[i] for i in keep], labels, data.classes)


def _load_official(path: Path, keys: Sequence[str]) -> Model:
    from .inference import DomainStyles
    from .official import load_official

    config, nets, epoch = load_official(path)
    styles = DomainStyles(config.k, config.sty_dim).eval()
    at = f" (epoch {epoch})" if epoch is not None else ""
    source = (f"Converted from the official TUNIT checkpoint `{Path(path).name}`{at} (clovaai/tunit); size, K and "
              f"style dimension read from its tensor shapes; no per-domain style codes (official checkpoints store "
              f"none). {OFFICIAL_LICENCE}")
    return Model(FAMILY, config, {"generator": nets["G_EMA"], "guiding": nets["C_EMA"], "styles": styles},
                 card={"source": source, "license": "cc-by-nc-4.0"})


FAMILY = TunitFamily()
