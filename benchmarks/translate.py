"""Measure ``ugatit_cli.translate`` against a plain per-image loop; prints one JSON object.

    python benchmarks/translate.py                      # 48 JPEGs (300-480 px), light ch64 model at 256 px
    python benchmarks/translate.py --images 16 --rounds 1 --batch-size 4
    python benchmarks/translate.py --full-images 32     # also the full 256 px ch64 model (~279 M parameters),
                                                        # fp32 and int8, batch 1 and --batch-size 4 (which a
                                                        # CPU runs one image per pass too: the row checks it)

Variants, each over the same images in a fresh process: the plain loop (fp32), translate with PyTorch fp32,
ONNX Runtime fp32 (graph exported beforehand into the cache, as a second run finds it: without importing
torch, which ``torch_imported`` in the JSON confirms), ONNX Runtime int8
(``ugatit export --quantize int8``, calibrated on real photos shipped with scikit-image / scikit-learn) and
PyTorch bf16. The int8 graph's quality against the fp32 graph (PSNR and largest per-pixel error of the 8-bit
outputs, on held-out real photos) is reported beside its speed. The JSON also records the CPU's flags that
decide the result (AVX-512, BF16, AMX, VNNI), the load average before and after, and per run the share of CPU
time the hypervisor gave to other guests (``steal_share``).

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
    """This process's own peak RSS: ``VmHWM`` of its address space. Not ``ru_maxrss``, which Linux carries over
    an exec from the process that forked (a spawned child would report at least its parent's RSS at the fork:
    the benchmark's, which built the models)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere: KiB on Linux, bytes on macOS


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


def make_model(folder: Path, size: int, light: bool = True) -> None:
    import torch

    from ugatit_cli.families.model_folder import write_model_folder
    from ugatit_cli.families.ugatit import Generator, UGATITConfig
    from ugatit_cli.families.ugatit.family import UGATITModel

    torch.manual_seed(0)
    config = UGATITConfig(img_size=size, ch=64, n_res=4, light=light)
    generator = Generator(config)
    with torch.no_grad():  # rho away from its init, so LIN/AdaLIN mix both statistics as in a trained model
        for name, param in generator.named_parameters():
            if name.endswith("rho"):
                param.uniform_(0.2, 0.8)
    write_model_folder(UGATITModel(config, {"a2b": generator}), folder)


def plain_loop(inputs: str, model: str, output: str, device: str = "cpu") -> dict:
    """One image at a time: open, resize, forward, save; the model's share of the time is measured too."""
    import torch
    from PIL import Image

    from ugatit_cli import load_generator
    from ugatit_cli.core.images import image_to_tensor, tensor_to_image

    generator = load_generator(model, direction="a2b", device=device)
    size = generator.config.img_size
    files = sorted(Path(inputs).iterdir())
    Path(output).mkdir(parents=True, exist_ok=True)
    model_seconds = 0.0
    start = time.perf_counter()
    with torch.inference_mode():
        for path in files:
            x = image_to_tensor(Image.open(path).convert("RGB"), size)[None].to(device)
            t = time.perf_counter()
            image = generator(x)[0]
            if device != "cpu":
                torch.cuda.synchronize()
            model_seconds += time.perf_counter() - t
            tensor_to_image(image[0]).save(Path(output) / f"{path.stem}.png")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_second": len(files) / seconds,
            "model_share": round(model_seconds / seconds, 3)}


def ours(inputs: str, model: str, output: str, precision: str, batch_size: int | None, backend: str = "torch",
         cache: str | None = None, env: dict | None = None) -> dict:
    import warnings

    if cache:
        os.environ["XDG_CACHE_HOME"] = cache
    os.environ.update(env or {})
    from ugatit_cli import translate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bf16 warning; the measurement says it better
        report = translate(inputs, model, output=output, precision=precision, batch_size=batch_size, device="cpu",
                           progress=False, backend=backend)
    assert not report.failed, report.failed
    assert report.backend == ("onnxruntime" if backend != "torch" else "torch"), report.backend
    return {"seconds": report.translate_seconds, "images_per_second": report.images_per_second,
            "backend": report.backend, "precision": report.precision}


def prepare_onnx(model: str, cache: str, int8_folder: str | None, calibration: str | None) -> dict:
    """Export the fp32 graph into the cache and index it for the model folder (what a first run does, so later
    runs find it without torch) and, if asked, the int8 folder."""
    import torch

    torch.set_num_threads(1)
    os.environ["XDG_CACHE_HOME"] = cache
    from ugatit_cli import resolve_model
    from ugatit_cli.export import export_model
    from ugatit_cli.onnx_backend import cached_graph, find_graph, remember_graph

    start = time.perf_counter()
    remember_graph(find_graph(model, "a2b").files, "a2b", cached_graph(resolve_model(model, ("a2b",)), "a2b"))
    facts = {"fp32_export_s": round(time.perf_counter() - start, 1)}
    if int8_folder:
        start = time.perf_counter()
        export_model(model, int8_folder, format="onnx", directions=("a2b",), quantize="int8",
                     calibration=calibration, show_progress=False)
        facts["int8_export_s"] = round(time.perf_counter() - start, 1)
    return facts


def int8_quality(model: str, cache: str, int8_folder: str, photos: list[str]) -> dict:
    """The int8 graph against the fp32 graph on held-out real photos: PSNR and largest error of the 8-bit images."""
    import torch

    torch.set_num_threads(1)
    os.environ["XDG_CACHE_HOME"] = cache
    from ugatit_cli import resolve_model
    from ugatit_cli.onnx_backend import OnnxSession, cached_graph
    from ugatit_cli.quantize import calibration_feeds, psnr_and_max_error

    loaded = resolve_model(model, ("a2b",))
    translator = loaded.family.translator(loaded, "a2b", None, {})
    fp32 = OnnxSession(cached_graph(loaded, "a2b"))
    int8 = OnnxSession(Path(int8_folder) / "generator_a2b.onnx")
    rows = {}
    for photo in photos:  # prepared as translate prepares them
        feeds = calibration_feeds(translator, Path(photo), fp32.input_names)
        psnr, worst = psnr_and_max_error(fp32.run(feeds)["image"], int8.run(feeds)["image"])
        rows[Path(photo).name] = {"psnr_db": round(psnr, 2), "max_abs_error_of_255": worst}
    return rows


def model_only(model: str, cache: str, int8_folder: str | None, repetitions: int) -> dict:
    """The networks alone, one thread, one 256 px image, the variants interleaved: median seconds per image.

    On a machine shared with other work this is the steadiest comparison: every variant meets the same load.
    """
    import statistics

    import torch

    torch.set_num_threads(1)
    os.environ["XDG_CACHE_HOME"] = cache
    from ugatit_cli import resolve_model
    from ugatit_cli.onnx_backend import OnnxSession, cached_graph

    loaded = resolve_model(model, ("a2b",))
    generator = loaded.nets["a2b"]
    size = loaded.config.img_size

    def session(path, quantized=False):
        graph = OnnxSession(path, quantized=quantized)
        return lambda x: graph.run({"input": x})

    runners = {"torch_fp32": generator, "onnxruntime_fp32": session(cached_graph(loaded, "a2b"))}
    if int8_folder:
        runners["onnxruntime_int8"] = session(Path(int8_folder) / "generator_a2b.onnx", quantized=True)

    def bf16(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return generator(x)

    runners["torch_bf16"] = bf16
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.inference_mode():
        for run in runners.values():
            run(x)
        for _ in range(repetitions):
            for name, run in runners.items():
                start = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    return {"seconds_per_image": {k: round(v, 3) for k, v in median.items()},
            "speedup_vs_torch_fp32": {k: round(median["torch_fp32"] / v, 2) for k, v in median.items()},
            "repetitions": repetitions}


def real_photos() -> tuple[list[str], list[str]]:
    """(calibration, held-out) real photos from the sample data of scikit-image, scikit-learn, matplotlib."""
    import matplotlib
    import skimage
    import sklearn.datasets

    sk = Path(skimage.__file__).parent / "data"
    sl = Path(sklearn.datasets.__file__).parent / "images"
    mp = Path(matplotlib.get_data_path()) / "sample_data"
    calibration = [sk / "astronaut.png", sk / "chelsea.png", sk / "coffee.png", sk / "rocket.jpg",
                   sk / "motorcycle_left.png", sl / "china.jpg"]
    held_out = [mp / "grace_hopper.jpg", sl / "flower.jpg", sk / "motorcycle_right.png"]
    return [str(p) for p in calibration], [str(p) for p in held_out]


def cpu_facts() -> dict:
    from ugatit_cli.core.hardware import cpu_features

    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    wanted = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni")))
    return {"model_name": locals().get("model", ""), "flags": wanted, **cpu_features().to_dict()}


def _measure(queue, name: str, kwargs: dict) -> None:
    functions = {"plain_loop": plain_loop, "ours": ours, "prepare_onnx": prepare_onnx, "int8_quality": int8_quality,
                 "model_only": model_only}
    result = functions[name](**kwargs)
    torch = sys.modules.get("torch")  # a stored ONNX graph's run never imports it
    queue.put({**result, "peak_rss_mb": round(_peak_rss_mb(), 1), "torch_imported": torch is not None,
               "torch_threads": torch.get_num_threads() if torch else None})


def _cpu_jiffies() -> tuple[int, int]:
    """(steal, total) CPU time of the whole machine so far, from ``/proc/stat`` (0, 0 where there is none)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def in_fresh_process(name: str, **kwargs) -> dict:
    """``name``'s result from a spawned process, with ``steal_share``: the share of the machine's CPU time the
    hypervisor gave to other guests meanwhile (a noisy neighbour shows there, not in the load average)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_measure, args=(queue, name, kwargs))
    steal, total = _cpu_jiffies()
    process.start()
    result = queue.get()
    process.join()
    steal_after, total_after = _cpu_jiffies()
    if total_after > total:
        result["steal_share"] = round((steal_after - steal) / (total_after - total), 3)
    return result


def _run_rounds(configs: dict, common: dict, rounds: int, tmp: Path, tag: str) -> dict:
    """Every configuration ``rounds`` times, interleaved, each in a fresh process; a variant's own kwargs
    override ``common`` (the int8 variant names its export folder as model). The best round counts."""
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for r in range(rounds):
        for name, (kind, kwargs) in configs.items():
            output = str(tmp / f"out_{tag}_{name}_{r}")
            results[name].append(in_fresh_process(kind, **{**common, **kwargs}, output=output))
    best = {name: max(runs, key=lambda run: run["images_per_second"]) for name, runs in results.items()}
    baseline = best["plain_loop_fp32"]
    return {
        "best": {name: {k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()}
                 for name, run in best.items()},
        "speedup_vs_plain_loop": {name: round(run["images_per_second"] / baseline["images_per_second"], 2)
                                  for name, run in best.items() if name != "plain_loop_fp32"},
        "peak_rss_vs_plain_loop": {name: round(run["peak_rss_mb"] / baseline["peak_rss_mb"], 2)
                                   for name, run in best.items() if name != "plain_loop_fp32"},
        "rounds_images_per_second": {name: [round(run["images_per_second"], 3) for run in runs]
                                     for name, runs in results.items()},
        # each round's variant against the same round's loop (the runs next to each other in time)
        "speedup_vs_plain_loop_per_round": {
            name: [round(run["images_per_second"] / loop["images_per_second"], 2)
                   for run, loop in zip(runs, results["plain_loop_fp32"], strict=True)]
            for name, runs in results.items() if name != "plain_loop_fp32"},
        "rounds_steal_share": {name: [run.get("steal_share") for run in runs] for name, runs in results.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="passed to translate (a CPU runs one image per pass whatever it says)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 variant (its export takes a while)")
    parser.add_argument("--full-images", type=int, default=0,
                        help="also the full 256 px ch64 model on this many images (batch 1 and batched)")
    parser.add_argument("--full-batch-size", type=int, default=4)
    parser.add_argument("--full-rounds", type=int, default=1)
    parser.add_argument("--model-repetitions", type=int, default=6,
                        help="interleaved single-thread forward passes per variant (model_only_one_thread)")
    args = parser.parse_args()
    from ugatit_cli.onnx_backend import rewrites_enabled

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_inputs(tmp / "inputs", max(args.images, args.full_images))
        make_model(tmp / "model", args.size)
        calibration, held_out = real_photos()
        (tmp / "calibration").mkdir()
        for photo in calibration:
            os.symlink(photo, tmp / "calibration" / Path(photo).name)
        cache = str(tmp / "cache")
        int8_folder = None if args.no_int8 else str(tmp / "int8")
        prepared = in_fresh_process("prepare_onnx", model=str(tmp / "model"), cache=cache, int8_folder=int8_folder,
                                    calibration=str(tmp / "calibration"))
        inputs = tmp / "inputs"
        if args.full_images and args.full_images < args.images:
            inputs = tmp / "inputs_light"
            inputs.mkdir()
            for path in sorted((tmp / "inputs").iterdir())[:args.images]:
                os.symlink(path, inputs / path.name)
        common = {"inputs": str(inputs), "model": str(tmp / "model")}
        batch = {"batch_size": args.batch_size}
        configs = {
            "plain_loop_fp32": ("plain_loop", {}),
            "translate_torch_fp32": ("ours", {"precision": "fp32", **batch, "backend": "torch"}),
            "translate_onnxruntime_fp32": ("ours", {"precision": "fp32", **batch, "backend": "onnxruntime",
                                                    "cache": cache}),
            # ONNX Runtime without its CPU arena (UGATIT_ORT_LOW_MEMORY=1): the speed/memory trade
            "translate_onnxruntime_fp32_low_memory": ("ours", {"precision": "fp32", **batch,
                                                               "backend": "onnxruntime", "cache": cache,
                                                               "env": {"UGATIT_ORT_LOW_MEMORY": "1"}}),
            "translate_torch_bf16": ("ours", {"precision": "bf16", **batch, "backend": "torch"}),
        }
        if int8_folder:
            configs["translate_onnxruntime_int8"] = ("ours", {"precision": "fp32", **batch, "backend": "auto",
                                                              "model": int8_folder})
        light = _run_rounds(configs, common, args.rounds, tmp, "light")
        report = {
            "images": args.images, "size": args.size, "batch_size": args.batch_size, "model": "light, ch 64, n_res 4",
            "cpus": os.cpu_count(), "cpu": cpu_facts(), "torch_threads_default": light["best"]["plain_loop_fp32"][
                "torch_threads"],
            "onnx_export": {k: v for k, v in prepared.items() if k.endswith("_s")},
            "onnxruntime_fp32_rewritten": rewrites_enabled(),  # UGATIT_ORT_REWRITE=0: the graphs as exported
            **light,
        }
        if args.model_repetitions:
            only = in_fresh_process("model_only", model=str(tmp / "model"), cache=cache, int8_folder=int8_folder,
                                    repetitions=args.model_repetitions)
            report["model_only_one_thread"] = {k: v for k, v in only.items() if k != "torch_threads"}
        if int8_folder:
            quality = in_fresh_process("int8_quality", model=str(tmp / "model"), cache=cache, int8_folder=int8_folder,
                                       photos=held_out)
            report["int8_quality_vs_fp32_on_held_out_photos"] = {k: v for k, v in quality.items() if k.endswith(
                (".jpg", ".png"))}
        if args.full_images:
            make_model(tmp / "full", args.size, light=False)
            full_cache = str(tmp / "full_cache")
            full_int8 = None if args.no_int8 else str(tmp / "full_int8")
            prepared = in_fresh_process("prepare_onnx", model=str(tmp / "full"), cache=full_cache,
                                        int8_folder=full_int8, calibration=str(tmp / "calibration"))
            full_inputs = tmp / "inputs_full"
            full_inputs.mkdir()
            for path in sorted((tmp / "inputs").iterdir())[:args.full_images]:
                os.symlink(path, full_inputs / path.name)
            full_configs = {
                "plain_loop_fp32": ("plain_loop", {}),
                "translate_torch_fp32_batch1": ("ours", {"precision": "fp32", "batch_size": 1, "backend": "torch"}),
                f"translate_torch_fp32_batch{args.full_batch_size}": (
                    "ours", {"precision": "fp32", "batch_size": args.full_batch_size, "backend": "torch"}),
                "translate_onnxruntime_fp32_batch1": ("ours", {"precision": "fp32", "batch_size": 1,
                                                               "backend": "onnxruntime", "cache": full_cache}),
                f"translate_onnxruntime_fp32_batch{args.full_batch_size}": (
                    "ours", {"precision": "fp32", "batch_size": args.full_batch_size, "backend": "onnxruntime",
                             "cache": full_cache}),
            }
            if full_int8:
                full_configs["translate_onnxruntime_int8_batch1"] = ("ours", {"precision": "fp32", "batch_size": 1,
                                                                              "backend": "auto", "model": full_int8})
                full_configs[f"translate_onnxruntime_int8_batch{args.full_batch_size}"] = (
                    "ours", {"precision": "fp32", "batch_size": args.full_batch_size, "backend": "auto",
                             "model": full_int8})
            full = _run_rounds(full_configs, {"inputs": str(full_inputs), "model": str(tmp / "full")},
                               args.full_rounds, tmp, "full")
            report["full_model"] = {"images": args.full_images, "model": f"full, ch 64, n_res 4, {args.size} px",
                                    "onnx_export": {k: v for k, v in prepared.items() if k.endswith("_s")}, **full}
            if full_int8:
                quality = in_fresh_process("int8_quality", model=str(tmp / "full"), cache=full_cache,
                                           int8_folder=full_int8, photos=held_out)
                report["full_model"]["int8_quality_vs_fp32_on_held_out_photos"] = {
                    k: v for k, v in quality.items() if k.endswith((".jpg", ".png"))}
        report["load_average_1min"] = {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)}
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
