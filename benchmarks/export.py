"""Measure ``ugatit export``: file sizes and seconds per format and dtype; prints one JSON object.

    python benchmarks/export.py             # the paper's full and light generators (256 px, ch 64, 4 blocks)
    python benchmarks/export.py --small     # a 64 px, ch 8 model: a quick check that the script runs

One direction (a2b) with random weights, from a model folder; each export runs in a fresh process so that
its peak RSS is its own. ONNX files are also run by onnxruntime on a batch of 2 and compared with PyTorch
(``max_abs_diff``; the float16 files against the float16-rounded PyTorch weights they store).

``both_directions_onnx``: ``export --format onnx`` of both directions (``export_model``, which traces the two
identical generators once) against the exporter called once per direction (``torch.onnx.export(dynamo=True)``
with its default optimizer, as ``export`` did before), each in a fresh process: wall and CPU seconds, the
seconds inside torch.export + the ONNX translation (``trace``) and the onnxscript optimizer (``optimize``),
and ``ratio`` = ours / per-direction. Run it with one thread (``OMP_NUM_THREADS=1``) on a quiet machine.
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


def make_source(root: Path, size: int, ch: int, light: bool, directions=("a2b",)) -> Path:
    import torch

    from ugatit_cli.families.model_folder import write_model_folder
    from ugatit_cli.families.ugatit import Generator, UGATITConfig
    from ugatit_cli.families.ugatit.family import UGATITModel

    torch.manual_seed(0)
    config = UGATITConfig(img_size=size, ch=ch, n_res=4, light=light)
    generators = {direction: Generator(config).eval() for direction in directions}  # each its own weights
    return write_model_folder(UGATITModel(config, generators), root / "source")


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


def _run_isolated(*args, function=None) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function or measure, args)


def _timed(owner, name: str, seconds: dict, label: str) -> None:
    """Wrap ``owner.name`` so that the seconds spent in it add up in ``seconds[label]``."""
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - start
    setattr(owner, name, wrapper)


def measure_both(source: str, output: str, per_direction: bool) -> dict:
    """Both directions to ONNX in this (fresh) process: ``export_model``, or (``per_direction``) the exporter
    called once per direction as ``export`` did before it shared one trace between them."""
    import contextlib
    import io
    import warnings

    import onnx
    import torch

    from ugatit_cli import export as exporter
    from ugatit_cli import load_generator
    from ugatit_cli.store.sources import resolve_model

    torch.set_num_threads(1)
    seconds: dict[str, float] = {}
    _timed(torch.onnx.ONNXProgram, "optimize", seconds, "optimize")
    wall, cpu = time.perf_counter(), time.process_time()
    if per_direction:
        _timed(torch.onnx, "export", seconds, "trace")
        model = resolve_model(source)
        Path(output).mkdir()
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            for key in model.nets:
                spec = model.family.onnx_io(model, key)
                dims = {name: {axis: torch.export.Dim(label, min=1) if axis == 0
                               else spec.multiple * torch.export.Dim(f"{label}_div", min=4)
                               for axis, label in spec.dynamic.get(name, {}).items()} for name in spec.input_names}
                program = torch.onnx.export(spec.module, tuple(spec.example), None, dynamo=True, opset_version=20,
                                            input_names=list(spec.input_names),
                                            output_names=list(spec.output_names),
                                            dynamic_shapes=exporter._by_argument(spec.module, dims))
                onnx.save_model(program.model_proto, Path(output) / model.family.onnx_name(key))
        seconds["trace"] -= seconds.get("optimize", 0.0)  # torch.onnx.export's total includes its optimizer
    else:
        _timed(exporter, "_trace", seconds, "trace")
        exporter.export_model(source, output, format="onnx", show_progress=False)
    row = {"way": "per direction" if per_direction else "ugatit export", 
           "seconds": round(time.perf_counter() - wall, 2),
           "cpu_seconds": round(time.process_time() - cpu, 2), **{k: round(v, 2) for k, v in seconds.items()},
           "peak_rss_mb": round(_peak_rss_mb())}
    import onnxruntime as ort

    diffs = []
    for direction in ("a2b", "b2a"):
        reference = load_generator(source, direction)
        size = reference.config.img_size
        x = torch.rand(3, 3, size, size) * 2 - 1
        with torch.no_grad():
            expected = reference(x)
        session = ort.InferenceSession(str(Path(output) / f"generator_{direction}.onnx"),
                                       providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x.numpy()})
        diffs += [float((torch.from_numpy(g) - e).abs().max()) for g, e in zip(got, expected, strict=True)]
    row["max_abs_diff"] = max(diffs)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a 64 px, ch 8 model instead of the paper's")
    parser.add_argument("--formats", default="safetensors,onnx")
    parser.add_argument("--both-only", action="store_true", help="only the both-directions ONNX comparison")
    args = parser.parse_args()
    size, ch = (64, 8) if args.small else (256, 64)
    import torch

    report = {"torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "models": []}
    for light in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            source = make_source(root, size, ch, light)
            model = {"img_size": size, "ch": ch, "n_res": 4, "light": light, "exports": []}
            for fmt in [] if args.both_only else args.formats.split(","):
                for half in (False, True):
                    out = root / f"{fmt}-{'fp16' if half else 'fp32'}"
                    model["exports"].append(_run_isolated(str(source), str(out), fmt, half))
            if "onnx" in args.formats.split(","):
                both = make_source(root / "both", size, ch, light, ("a2b", "b2a"))
                rows = [_run_isolated(str(both), str(root / f"both-{way}"), way, function=measure_both)
                        for way in (False, True)]
                model["both_directions_onnx"] = {"ours": rows[0], "per_direction": rows[1],
                                                 "ratio": round(rows[0]["seconds"] / rows[1]["seconds"], 3),
                                                 "cpu_ratio": round(rows[0]["cpu_seconds"] / rows[1]["cpu_seconds"], 3)}
            report["models"].append(model)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
