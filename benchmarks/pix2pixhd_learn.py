"""Does pix2pixHD learn real data? Held-out PSNR/SSIM of label map -> photo, on photos it never saw.

    OMP_NUM_THREADS=1 python benchmarks/pix2pixhd_learn.py                    # 2,000 iterations: ~30 min (a busy CPU)
    python benchmarks/pix2pixhd_learn.py --split validation                   # the split design choices use
    python benchmarks/pix2pixhd_learn.py --iterations 200 --eval-every 50     # a quick look

Photos: the colour photos that ship inside scikit-image and scikit-learn, each scaled to 192 px high. Training
photos: ``astronaut``, ``coffee``, ``rocket``, ``china``, ``motorcycle`` (the left view of
``stereo_motorcycle``) and ``immunohistochemistry``; held-out photos: ``chelsea`` and ``flower``, which no
training pair comes from. Training pairs are 64 px crops every 16 px, held-out pairs the non-overlapping 64 px
tiles of the held-out photos. ``--split validation`` trains on four of the training photos and evaluates on
``coffee`` and ``rocket``: the label design below was chosen there, never on the held-out photos (the
iteration count is what ~20 minutes of one CPU thread allow).

Label maps: each photo's pixels are clustered onto a palette with error diffusion (``--labels dither``, the
default: Pillow's Floyd-Steinberg quantiser); a pixel's class is its palette index. The palette (``--palette
cube``, the default) is the 8 corners of the RGB cube (black, blue, green, cyan, red, magenta, yellow, white):
it needs no fitting, and any colour is a local mix of its corners. A class then does not fix the colour (a
"red" pixel in a dithered orange area is orange, one in a dark brown area is brown), but the photo stays
predictable from the label map: the local mix of classes around a pixel tells its colour, as the density of
dots tells the grey of a halftone print. ``--palette kmeans`` fits ``--label-nc`` colours by k-means on the
training photos instead; on the validation split it could not represent colours the training photos lack
(``rocket``'s blue sky became dithered brown), so the label map no longer holds the answer. ``--labels
nearest`` is the plain clustering (each pixel its nearest palette colour: a coarse colour segmentation);
there what a class leaves open (which shade of it a region has) is not predictable from the label map of an
unseen photo (a ridge regression on the blurred one-hot classes did not beat the class mean on the validation
split), so the class mean is the best a per-pixel prediction can do there and a GAN, which draws a sample,
stays below it. Instance maps: the photo's Felzenszwalb segments (scikit-image). The dataset is written in
the official layout (``train_label/ train_img/ train_inst/ test_*``) and read back through the family's own
data code.

Training: ``Pix2PixHDTrainer`` with the official losses, schedule (Adam 2e-4, betas (0.5, 0.999), constant then
linear decay over the second half) and initialisation; the VGG loss is off (``no_vgg_loss``) because its
ImageNet weights cannot be downloaded here; a small generator (``--ngf``, 3 downsamplings for 64 px, 3
residual blocks) and discriminator (``--ndf``, 2 scales, 3 layers). Printed: the held-out PSNR (dB) and SSIM
(means over tiles) of the untrained generator, of the references, and of the generator every ``--eval-every``
iterations (the curve), then one JSON object. References:

- ``class_mean``: each pixel gets the mean colour of its class over the training pairs (the baseline to beat);
- ``class_mean_oracle``: each pixel gets the mean colour of its class in the held-out tile itself (it reads the
  answer: an upper reference for any colour-per-class prediction);
- ``class_mean_smoothed``: the ``class_mean`` image blurred (Gaussian, sigma 1 px): the simplest use of the
  context, no learning.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from ugatit_cli.core.images import tensor_to_pixels  # noqa: E402
from ugatit_cli.families.pix2pixhd.config import Pix2PixHDConfig, Pix2PixHDTrainConfig  # noqa: E402
from ugatit_cli.families.pix2pixhd.data import (  # noqa: E402
    PairedBatches,
    TransformParams,
    load_sample,
    scan_dataset,
)
from ugatit_cli.families.pix2pixhd.paired_metrics import psnr_ssim  # noqa: E402
from ugatit_cli.families.pix2pixhd.step import Pix2PixHDTrainer  # noqa: E402

HEIGHT, TILE, STRIDE = 192, 64, 16
TRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "china", "motorcycle", "immunohistochemistry")
HELD_OUT_PHOTOS = ("chelsea", "flower")
VALIDATION_PHOTOS = ("coffee", "rocket")  # taken out of TRAIN_PHOTOS by --split validation


def split_photos(split: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training photos, evaluation photos) of ``split``; the two never share a photo."""
    if split == "validation":
        return tuple(n for n in TRAIN_PHOTOS if n not in VALIDATION_PHOTOS), VALIDATION_PHOTOS
    return TRAIN_PHOTOS, HELD_OUT_PHOTOS


def load_photo(name: str) -> np.ndarray:
    """A packaged photo as uint8 (HEIGHT, W, 3), scaled with Lanczos."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    if name in ("china", "flower"):
        pixels = load_sample_image(f"{name}.jpg")
    elif name == "motorcycle":
        pixels = data.stereo_motorcycle()[0]
    else:
        pixels = getattr(data, name)()
    img = Image.fromarray(pixels[..., :3])
    w = round(img.width * HEIGHT / img.height)
    return np.asarray(img.resize((w, HEIGHT), Image.Resampling.LANCZOS))


CUBE = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)], dtype=np.uint8)


def fit_palette(train: list[np.ndarray], label_nc: int, seed: int) -> np.ndarray:
    """``label_nc`` k-means colours (uint8, (label_nc, 3)) of 20,000 pixels drawn from the training photos."""
    from sklearn.cluster import KMeans

    pixels = np.concatenate([p.reshape(-1, 3) for p in train]).astype(np.float32)
    sample = pixels[np.random.default_rng(seed).choice(len(pixels), 20000, replace=False)]
    centres = KMeans(n_clusters=label_nc, n_init=4, random_state=seed).fit(sample).cluster_centers_
    return centres.round().clip(0, 255).astype(np.uint8)


def palette_labels(pixels: np.ndarray, palette: np.ndarray, dither: bool) -> np.ndarray:
    """Class ids (H, W) of a photo on ``palette``: Pillow's quantiser, Floyd-Steinberg error diffusion or none."""
    k = len(palette)
    target = Image.new("P", (1, 1))
    target.putpalette(np.resize(palette, (256, 3)).ravel().tolist())  # entry j holds colour j % k
    mode = Image.Dither.FLOYDSTEINBERG if dither else Image.Dither.NONE
    return np.asarray(Image.fromarray(pixels).quantize(palette=target, dither=mode)).astype(np.int64) % k


def build_dataset(root: Path, split: str, label_nc: int, labels: str, seed: int, palette_kind: str = "cube"
                  ) -> dict[str, object]:
    """Write the official layout under ``root``; return what was built (photos, palette)."""
    from skimage.segmentation import felzenszwalb

    train_names, eval_names = split_photos(split)
    photos = {name: load_photo(name) for name in train_names + eval_names}
    palette = CUBE if palette_kind == "cube" else fit_palette([photos[n] for n in train_names], label_nc, seed)
    for folder in ("train_label", "train_img", "train_inst", "test_label", "test_img", "test_inst"):
        (root / folder).mkdir(parents=True)
    for name, pixels in photos.items():
        h, w, _ = pixels.shape
        ids = palette_labels(pixels, palette, labels == "dither")
        segments = felzenszwalb(pixels, scale=100, sigma=0.5, min_size=30)
        if name in train_names:
            phase, step = "train", STRIDE
        else:
            phase, step = "test", TILE
        for y in range(0, h - TILE + 1, step):
            for x in range(0, w - TILE + 1, step):
                stem = f"{name}_{y:03d}_{x:03d}"
                window = (slice(y, y + TILE), slice(x, x + TILE))
                Image.fromarray(ids[window].astype(np.uint8), mode="L").save(root / f"{phase}_label" / f"{stem}.png")
                Image.fromarray(segments[window].astype(np.uint16)).save(root / f"{phase}_inst" / f"{stem}.png")
                Image.fromarray(pixels[window]).save(root / f"{phase}_img" / f"{stem}.png")
    return {"training_photos": list(train_names), "evaluation_photos": list(eval_names),
            "palette": palette.tolist()}


def scores(fake: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    """(PSNR dB, SSIM) of two (1, 3, H, W) images in [-1, 1] as 8-bit files (the family's paired metrics)."""
    return psnr_ssim(tensor_to_pixels(fake[0]).numpy(), tensor_to_pixels(real[0]).numpy())


def mean_scores(pairs) -> tuple[float, float]:
    pairs = list(pairs)
    return float(np.mean([p for p, _ in pairs])), float(np.mean([s for _, s in pairs]))


def held_out(train: Pix2PixHDTrainConfig, root: Path) -> list[dict[str, torch.Tensor]]:
    samples = scan_dataset(root, train.model, phase="test")
    keep = TransformParams((TILE, TILE), None, False)
    return [{k: v[None] for k, v in load_sample(train, s, keep).items()} for s in samples]


@torch.no_grad()
def evaluate(trainer: Pix2PixHDTrainer, tests) -> tuple[float, float]:
    return mean_scores(scores(trainer.sample(b)["generated"], b["image"]) for b in tests)


def class_means(ids: torch.Tensor, images: torch.Tensor, nc: int) -> torch.Tensor:
    """(nc, 3) mean colour of each class over ``ids`` (N,) and ``images`` (3, N); 0 for an absent class."""
    sums = torch.zeros(nc, 3, dtype=torch.float64).index_add_(0, ids, images.T.double())
    counts = torch.bincount(ids, minlength=nc).double()
    return (sums / counts.clamp_min(1)[:, None]).float()


def references(root: Path, train: Pix2PixHDTrainConfig, tests) -> dict[str, tuple[float, float]]:
    """PSNR/SSIM of the class-mean references (see the module docstring)."""
    from scipy.ndimage import gaussian_filter

    nc = train.model.label_nc
    keep = TransformParams((TILE, TILE), None, False)
    items = [load_sample(train, s, keep) for s in scan_dataset(root, train.model, phase="train")]
    means = class_means(torch.cat([i["label"].reshape(-1) for i in items]),
                        torch.cat([i["image"].reshape(3, -1) for i in items], dim=1), nc)

    def paint(colours: torch.Tensor, b) -> torch.Tensor:
        return colours[b["label"][0, 0]].permute(2, 0, 1)[None]

    def smoothed(b) -> torch.Tensor:
        image = paint(means, b)[0].numpy()
        return torch.from_numpy(np.stack([gaussian_filter(c, 1.0, mode="nearest") for c in image]))[None]

    def oracle(b) -> torch.Tensor:
        return paint(class_means(b["label"].reshape(-1), b["image"][0].reshape(3, -1), nc), b)

    return {
        "class_mean": mean_scores(scores(paint(means, b), b["image"]) for b in tests),
        "class_mean_smoothed": mean_scores(scores(smoothed(b), b["image"]) for b in tests),
        "class_mean_oracle": mean_scores(scores(oracle(b), b["image"]) for b in tests),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("test", "validation"), default="test",
                        help="test: evaluate on the held-out photos; validation: on two training photos")
    parser.add_argument("--labels", choices=("dither", "nearest"), default="dither",
                        help="palette classes with Floyd-Steinberg error diffusion, or the nearest colour")
    parser.add_argument("--palette", choices=("cube", "kmeans"), default="cube",
                        help="the 8 corners of the RGB cube (label_nc 8), or --label-nc k-means colours")
    parser.add_argument("--label-nc", type=int, default=8)
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--ndf", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.palette == "cube":
        args.label_nc = len(CUBE)
    torch.set_num_threads(args.threads)

    model = Pix2PixHDConfig(label_nc=args.label_nc, ngf=args.ngf, n_downsample_global=3, n_blocks_global=3)
    train = Pix2PixHDTrainConfig(model=model, ndf=args.ndf, no_vgg_loss=True, iterations=args.iterations,
                                 batch_size=args.batch_size, resize_or_crop="none", seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        built = build_dataset(root, args.split, args.label_nc, args.labels, args.seed, args.palette)
        samples = scan_dataset(root, model)
        tests = held_out(train, root)
        refs = references(root, train, tests)
        torch.manual_seed(args.seed)
        trainer = Pix2PixHDTrainer(train)
        batches = PairedBatches(train, samples)
        untrained = evaluate(trainer, tests)
        print(f"{args.split} split: {len(samples)} training pairs from {', '.join(built['training_photos'])}; "
              f"{len(tests)} evaluation tiles from {', '.join(built['evaluation_photos'])}", flush=True)
        for name, (p, s) in {**refs, "untrained": untrained}.items():
            print(f"{name:20s} PSNR {p:6.2f} dB  SSIM {s:.3f}", flush=True)
        curve = [(0, untrained)]
        start = time.perf_counter()
        for it in range(args.iterations):
            losses = trainer.step(batches[it])
            if (it + 1) % args.eval_every == 0 or it + 1 == args.iterations:
                curve.append((it + 1, evaluate(trainer, tests)))
                print(f"iteration {it + 1:5d}  PSNR {curve[-1][1][0]:.2f} dB SSIM {curve[-1][1][1]:.3f}  "
                      f"G_GAN {losses['G_GAN']:.3f} G_GAN_Feat {losses['G_GAN_Feat']:.3f} "
                      f"D {losses['d_loss']:.3f}  ({time.perf_counter() - start:.0f} s)", flush=True)
        seconds = time.perf_counter() - start
    final = curve[-1][1]
    print(json.dumps({
        "benchmark": "pix2pixhd_learn", "split": args.split, "labels": args.labels, "palette": args.palette,
        "label_nc": args.label_nc,
        "training_photos": built["training_photos"], "evaluation_photos": built["evaluation_photos"],
        "ngf": args.ngf, "ndf": args.ndf, "iterations": args.iterations, "batch_size": args.batch_size,
        "vgg_loss": False, "training_pairs": len(samples), "evaluation_tiles": len(tests),
        "psnr_db": {"untrained": round(untrained[0], 2), **{k: round(v[0], 2) for k, v in refs.items()},
                    "final": round(final[0], 2), "best": round(max(p for _, (p, _) in curve[1:]), 2)},
        "ssim": {"untrained": round(untrained[1], 4), **{k: round(v[1], 4) for k, v in refs.items()},
                 "final": round(final[1], 4)},
        "final_minus_class_mean_db": round(final[0] - refs["class_mean"][0], 2),
        "curve": [[i, round(p, 2), round(s, 4)] for i, (p, s) in curve],
        "seconds_training": round(seconds, 1),
    }))


if __name__ == "__main__":
    main()
