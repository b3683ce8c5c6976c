"""Measure ``ugatit export``: file sizes and seconds per format and dtype; prints one JSON object.

    python benchmarks/export.py             # the paper's full and light generators (256 px, ch 64, 4 blocks)
    python benchmarks/export.py --small     # a 64 px, ch 8 model: a quick check that the script runs

One direction (a2b) with random weights, from a model folder; each export runs in a fresh process so that
its peak RSS is its own. ONNX files are also run by onnxruntime on a batch of 2 and compared with PyTorch
(``max_abs_diff``; the float16 files against the float16-rounded PyTorch weights they store).
"""

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT)]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_source(root: Path, size: int, ch: int, light: bool) -> Path:
    import torch

    from ugatit_cli.families.model_folder import write_model_folder
    from ugatit_cli.families.ugatit import Generator, UGATITConfig
    from ugatit_cli.families.ugatit.family import UGATITModel

    torch.manual_seed(0)
    config = UGATITConfig(img_size=size, ch=ch, n_res=4, light=light)
    return write_model_folder(UGATITModel(config, {"a2b": Generator(config).eval()}), root / "source")


def measure(source: str, output: str, fmt: str, half: bool) -> dict:
    """One export in this (fresh) process: size, seconds, peak RSS and, for ONNX, the onnxruntime check."""
    import torch

    from ugatit_cli import load_generator
    from ugatit_cli.export import export_model
    from ugatit_cli.families.model_folder import write_model_folder
    from ugatit_cli.families.ugatit.family import UGATITModel

    start = time.perf_counter()
    result = export_model(source, output, format=fmt, directions=("a2b",), half=half, show_progress=False)
    seconds = time.perf_counter() - start
    name = "generator_a2b.onnx" if fmt == "onnx" else "generator_a2b.safetensors"
    row = {"format": fmt, "weights_dtype": result.weights_dtype, "file": name, "bytes": result.files[name],
           "export_seconds": round(seconds, 2), "peak_rss_mb": round(_peak_rss_mb())}
    if fmt == "onnx":
        import onnxruntime as ort

        reference = load_generator(source, "a2b")
        if half:  # what the file stores: float16-rounded weights
            rounded = Path(output).with_name("rounded")
            write_model_folder(UGATITModel(reference.config, {"a2b": reference}, weights_dtype="float16"), rounded)
            reference = load_generator(rounded, "a2b")
        size = reference.config.img_size
        x = torch.rand(2, 3, size, size) * 2 - 1
        with torch.no_grad():
            expected = reference(x)
        start = time.perf_counter()
        session = ort.InferenceSession(str(Path(output) / name), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x.numpy()})
        row["onnxruntime_load_and_run_seconds"] = round(time.perf_counter() - start, 2)
        diffs = [float((torch.from_numpy(g) - e).abs().max()) for g, e in zip(got, expected, strict=True)]
        row["max_abs_diff"] = max(diffs)
    return row


def _run_isolated(*args) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a 64 px, ch 8 model instead of the paper's")
    parser.add_argument("--formats", default="safetensors,onnx")
    args = parser.parse_args()
    size, ch = (64, 8) if args.small else (256, 64)
    import torch

    report = {"torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "models": []}
    for light in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            source = make_source(root, size, ch, light)
            model = {"img_size": size, "ch": ch, "n_res": 4, "light": light, "exports": []}
            for fmt in args.formats.split(","):
                for half in (False, True):
                    out = root / f"{fmt}-{'fp16' if half else 'fp32'}"
                    model["exports"].append(_run_isolated(str(source), str(out), fmt, half))
            report["models"].append(model)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
