"""Measure ``ugatit_cli.translate`` against a plain per-image loop; prints one JSON object.

    python benchmarks/translate.py                      # 48 JPEGs (300-480 px), light ch64 model at 256 px
    python benchmarks/translate.py --images 16 --rounds 1 --batch-size 4

Both sides use the same model folder (a light U-GAT-IT, ch 64, 4 residual blocks, random weights) and the
same inputs: photo-like JPEGs of varied sizes, so decoding and resizing cost what they cost on photos. The
plain loop opens, resizes, runs the generator and saves one image at a time (what a script built on
``load_generator`` does); it also reports how its time splits between image IO and the model. Every
measurement runs in a fresh process, so its peak RSS is its own; rounds interleave the configurations and
the best round counts, which damps (but does not remove) the noise of other work on the machine.
"""

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT)]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_inputs(folder: Path, count: int) -> None:
    """Photo-like JPEGs: smooth gradients, blurred shapes and sensor noise at sizes from 300x400 to 480x360."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(0)
    sizes = [(300, 400), (400, 300), (480, 360), (360, 480), (320, 320)]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        y, x = np.mgrid[0:h, 0:w] / max(w, h)
        colours = rng.uniform(0, 255, (2, 3))
        base = colours[0] * (1 - x[..., None]) + colours[1] * y[..., None]
        img = Image.fromarray(base.clip(0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = rng.integers(0, w), rng.integers(0, h)
            r = rng.integers(10, 80)
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        img = img.filter(ImageFilter.GaussianBlur(3))
        noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (h, w, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.jpg", quality=90)


def make_model(folder: Path, size: int) -> None:
    import torch

    from ugatit_cli.families.model_folder import write_model_folder
    from ugatit_cli.families.ugatit import Generator, UGATITConfig
    from ugatit_cli.families.ugatit.family import UGATITModel

    torch.manual_seed(0)
    config = UGATITConfig(img_size=size, ch=64, n_res=4, light=True)
    write_model_folder(UGATITModel(config, {"a2b": Generator(config)}), folder)


def plain_loop(inputs: str, model: str, output: str) -> dict:
    """One image at a time: open, resize, forward, save; the model's share of the time is measured too."""
    import torch
    from PIL import Image

    from ugatit_cli import load_generator
    from ugatit_cli.core.images import image_to_tensor, tensor_to_image

    generator = load_generator(model, direction="a2b")
    size = generator.config.img_size
    files = sorted(Path(inputs).iterdir())
    Path(output).mkdir(parents=True, exist_ok=True)
    model_seconds = 0.0
    start = time.perf_counter()
    with torch.inference_mode():
        for path in files:
            x = image_to_tensor(Image.open(path).convert("RGB"), size)[None]
            t = time.perf_counter()
            image = generator(x)[0]
            model_seconds += time.perf_counter() - t
            tensor_to_image(image[0]).save(Path(output) / f"{path.stem}.png")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_second": len(files) / seconds,
            "model_share": round(model_seconds / seconds, 3)}


def ours(inputs: str, model: str, output: str, precision: str, batch_size: int | None) -> dict:
    from ugatit_cli import translate

    report = translate(inputs, model, output=output, precision=precision, batch_size=batch_size, device="cpu",
                       progress=False)
    assert not report.failed, report.failed
    return {"seconds": report.translate_seconds, "images_per_second": report.images_per_second}


def _measure(queue, name: str, kwargs: dict) -> None:
    import torch

    result = plain_loop(**kwargs) if name == "plain_loop" else ours(**kwargs)
    queue.put({**result, "peak_rss_mb": round(_peak_rss_mb(), 1), "torch_threads": torch.get_num_threads()})


def in_fresh_process(name: str, **kwargs) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_measure, args=(queue, name, kwargs))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=None, help="default: translate's own (1 on a CPU)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_inputs(tmp / "inputs", args.images)
        make_model(tmp / "model", args.size)
        common = {"inputs": str(tmp / "inputs"), "model": str(tmp / "model")}
        configs = {
            "plain_loop_fp32": ("plain_loop", {}),
            "translate_fp32": ("ours", {"precision": "fp32", "batch_size": args.batch_size}),
            "translate_bf16": ("ours", {"precision": "bf16", "batch_size": args.batch_size}),
        }
        rounds: dict[str, list[dict]] = {name: [] for name in configs}
        for r in range(args.rounds):
            for name, (kind, kwargs) in configs.items():
                output = str(tmp / f"out_{name}_{r}")
                rounds[name].append(in_fresh_process(kind, **common, **kwargs, output=output))
        best = {name: max(runs, key=lambda run: run["images_per_second"]) for name, runs in rounds.items()}
        baseline = best["plain_loop_fp32"]["images_per_second"]
        print(json.dumps({
            "images": args.images, "size": args.size, "batch_size": args.batch_size, "model": "light, ch 64, n_res 4",
            "cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
            "best": {name: {k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()}
                     for name, run in best.items()},
            "speedup_vs_plain_loop": {name: round(run["images_per_second"] / baseline, 2)
                                      for name, run in best.items() if name != "plain_loop_fp32"},
            "rounds_images_per_second": {name: [round(run["images_per_second"], 3) for run in runs]
                                         for name, runs in rounds.items()},
        }, indent=2))


if __name__ == "__main__":
    main()
