"""GPU translation benchmark (run by ``benchmarks/gpu.sh``); prints one JSON object.

Two measurements on one CUDA GPU, for the light and the full U-GAT-IT generator (ch 64, 4 residual blocks,
256 px, random weights):

- ``generator``: images/s of the generator alone on device tensors, fp32 and bf16 autocast, channels_last,
  eager and ``torch.compile``, batch 1/8/32/64 (CUDA events; a few warm-up passes first);
- ``pipeline``: ``ugatit_cli.translate`` over real-size JPEGs on disk (decode threads, pinned memory,
  non-blocking copies, PNG writers) against the plain per-image loop of ``benchmarks/translate.py``.

Everything runs under one time budget (``--budget-s``): a combination that would start after it is
reported as ``"skipped": "time budget"`` so the whole script ends in time.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]


def generator_rate(generator, batch: int, dtype, compiled: bool, size: int, passes: int) -> dict:
    import torch

    from ugatit_cli.core.devices import autocast

    device = torch.device("cuda")
    model = torch.compile(generator) if compiled else generator
    x = (torch.rand(batch, 3, size, size, device=device) * 2 - 1).contiguous(memory_format=torch.channels_last)
    start = time.perf_counter()
    with torch.inference_mode(), autocast(device, dtype):
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        warmup = time.perf_counter() - start
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(passes):
            model(x)
        end.record()
        torch.cuda.synchronize()
    seconds = begin.elapsed_time(end) / 1000
    return {"images_per_second": round(batch * passes / seconds, 1), "warmup_s": round(warmup, 1),
            "peak_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=170)
    parser.add_argument("--images", type=int, default=256, help="JPEGs for the pipeline measurement")
    args = parser.parse_args()

    import torch
    from translate import make_inputs, make_model, plain_loop

    from ugatit_cli import translate
    from ugatit_cli.families.ugatit import Generator, UGATITConfig

    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU")
    start = time.perf_counter()
    report: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "generator": {}, "pipeline": {}}
    torch.backends.cudnn.benchmark = True
    for light in (True, False):
        name = "light" if light else "full"
        torch.manual_seed(0)
        generator = Generator(UGATITConfig(img_size=256, ch=64, n_res=4, light=light)).cuda().eval()
        generator = generator.to(memory_format=torch.channels_last)
        for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            for compiled in (False, True):
                for batch in (1, 8, 32, 64):
                    key = f"{name}_{precision}_{'compile' if compiled else 'eager'}_batch{batch}"
                    if compiled and batch not in (8, 64):
                        continue  # each batch size compiles anew; two sizes show the trend within the budget
                    if time.perf_counter() - start > args.budget_s * 0.6:
                        report["generator"][key] = {"skipped": "time budget"}
                        continue
                    torch.cuda.reset_peak_memory_stats()
                    try:
                        report["generator"][key] = generator_rate(generator, batch, dtype, compiled, 256,
                                                                  passes=max(4, 256 // batch))
                    except Exception as exc:  # an OOM or a compile failure is a result too
                        report["generator"][key] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        del generator
        torch.cuda.empty_cache()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_inputs(tmp / "inputs", args.images)
        make_model(tmp / "model", 256)
        if time.perf_counter() - start < args.budget_s * 0.8:
            t = time.perf_counter()
            loop = plain_loop(str(tmp / "inputs"), str(tmp / "model"), str(tmp / "plain"), device="cuda")
            report["pipeline"]["plain_loop_fp32"] = {**loop, "wall_s": round(time.perf_counter() - t, 1)}
        for precision, batch in (("fp32", 32), ("bf16", 32), ("bf16", 64)):
            key = f"translate_{precision}_batch{batch}"
            if time.perf_counter() - start > args.budget_s:
                report["pipeline"][key] = {"skipped": "time budget"}
                continue
            done = translate(str(tmp / "inputs"), str(tmp / "model"), output=str(tmp / key), device="cuda",
                             precision=precision, batch_size=batch, progress=False, backend="torch")
            report["pipeline"][key] = {"images_per_second": round(done.images_per_second, 2),
                                       "seconds": round(done.translate_seconds, 2), "failed": len(done.failed)}
        if "plain_loop_fp32" in report["pipeline"]:
            base = report["pipeline"]["plain_loop_fp32"]["images_per_second"]
            report["pipeline"]["speedup_vs_plain_loop"] = {
                k: round(v["images_per_second"] / base, 2) for k, v in report["pipeline"].items()
                if k.startswith("translate_") and "images_per_second" in v}
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
