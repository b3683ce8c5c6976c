"""Measure the TF-checkpoint import; prints one JSON object.

    python benchmarks/tf_import.py            # the official fixture (128 px, ch 4) from ../shared/fixtures
    python benchmarks/tf_import.py --release  # also a synthetic generator with the release's shapes
                                              # (256 px, ch 64: ~1.1 GB; needs ~6 GB RAM and ~3 GB disk)

Remote numbers come from the local Hub stand-in of the tests (tests/hub_server.py) over loopback, so they
measure our code and huggingface_hub's, not the Hub's network. Each measurement runs in a fresh process
so that its peak RSS is its own.
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
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _point_hub_at(hub, cache: Path) -> None:
    """What HF_ENDPOINT / HF_HUB_CACHE would do at import time (huggingface_hub is already imported)."""
    from huggingface_hub import constants

    constants.ENDPOINT = hub.url
    constants.HUGGINGFACE_CO_URL_TEMPLATE = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    constants.HF_HUB_CACHE = str(cache)


def remote_conversion(checkpoint_dir: str, repo_id: str, folder: str, prefix: str) -> dict:
    """Convert one direction (a2b) through the local Hub stand-in, then load it again from the cache."""
    from hub_server import LocalHub, repo_from_folder

    from ugatit_cli.families.ugatit.importers.tf_hub import HubTFCheckpoint, load_hub_tf_checkpoint

    files = repo_from_folder(checkpoint_dir, under=folder)
    data_path = f"{folder}/{prefix}.data-00000-of-00001"
    source = HubTFCheckpoint(repo_id, folder, prefix)
    with LocalHub({repo_id: files}) as hub, tempfile.TemporaryDirectory() as cache:
        _point_hub_at(hub, Path(cache))
        start = time.perf_counter()
        load_hub_tf_checkpoint(source, ("a2b",), show_progress=False)
        first = time.perf_counter() - start
        requests = len(hub.log)
        start = time.perf_counter()
        load_hub_tf_checkpoint(source, ("a2b",), show_progress=False)
        cached = time.perf_counter() - start
        fetched = hub.bytes_served(repo_id, data_path)
        return {
            "data_file_bytes": len(files[data_path]),
            "data_bytes_fetched": fetched,
            "fetched_fraction": round(fetched / len(files[data_path]), 4),
            "index_bytes_fetched": hub.bytes_served(repo_id, f"{folder}/{prefix}.index"),
            "range_requests": sum(1 for r in hub.log if r.path == data_path and r.range is not None),
            "first_use_seconds": round(first, 3),
            "cached_load_seconds": round(cached, 3),
            "requests_on_cached_load": len(hub.log) - requests,
            "peak_rss_mb": round(_peak_rss_mb()),
        }


def local_conversion(checkpoint_dir: str) -> dict:
    """``convert_tf_checkpoint`` of both directions into a model folder."""
    from ugatit_cli.families.ugatit.importers.tf_convert import convert_tf_checkpoint

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        convert_tf_checkpoint(checkpoint_dir, Path(out) / "model", ("a2b",), show_progress=False)
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in (Path(out) / "model").iterdir())
    return {"one_direction_seconds": round(seconds, 3), "model_folder_bytes": size,
            "peak_rss_mb": round(_peak_rss_mb())}


def _in_fresh_process(function, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(function, args)


def write_release_sized_checkpoint(folder: Path, prefix: str) -> int:
    """generator_B with the release's shapes (random weights), as TF would save it; returns data bytes."""
    import torch
    from tf_writer import tf_generator_tensors, write_checkpoint

    from ugatit_cli.families.ugatit import Generator, UGATITConfig

    torch.manual_seed(0)
    generator = Generator(UGATITConfig(img_size=256, ch=64, n_res=4, variant="tf"))
    folder.mkdir(parents=True)
    write_checkpoint(folder / prefix, tf_generator_tensors(generator, "generator_B"))
    return (folder / f"{prefix}.data-00000-of-00001").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", action="store_true", help="also measure a release-sized generator")
    args = parser.parse_args()
    torch_threads = os.environ.setdefault("OMP_NUM_THREADS", "2")

    from tf_fixtures import FIXTURES, OFFICIAL_FOLDER, OFFICIAL_PREFIX

    fixture_dir = FIXTURES / "full_128px_ch4" / OFFICIAL_FOLDER
    result: dict = {"omp_num_threads": torch_threads}
    if fixture_dir.is_dir():
        result["fixture_full_128px_ch4"] = {
            "remote_one_direction": _in_fresh_process(
                remote_conversion, str(fixture_dir), "hylee/UGATIT_model", OFFICIAL_FOLDER, OFFICIAL_PREFIX),
            "local_export": _in_fresh_process(local_conversion, str(fixture_dir)),
        }
    else:
        result["fixture_full_128px_ch4"] = f"skipped: {fixture_dir} not found"
    if args.release:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / OFFICIAL_FOLDER
            start = time.perf_counter()
            data_bytes = _in_fresh_process(write_release_sized_checkpoint, folder, OFFICIAL_PREFIX)
            result["release_sized_generator"] = {
                "data_file_bytes": data_bytes,
                "synthesis_seconds": round(time.perf_counter() - start, 1),
                "local_export": _in_fresh_process(local_conversion, str(folder)),
                "remote_one_direction": _in_fresh_process(
                    remote_conversion, str(folder), "bench/release", OFFICIAL_FOLDER, OFFICIAL_PREFIX),
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
