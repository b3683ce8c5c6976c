"""Face detection on real photos: which detector, and what faces cost per photo; prints one JSON object.

    OMP_NUM_THREADS=1 python benchmarks/faces.py            # every cascade x min_neighbors, then timings
    python benchmarks/faces.py --quick                      # the chosen detector only

Detectors: OpenCV's frontal-face Haar cascades (the XML files in the opencv-python-headless wheel) at
several ``min_neighbors``. Data (tests/real_photos.py): the 100 faces and 100 non-faces of scikit-image's
``lfw_subset``, 12 face-free scikit-image photos, the astronaut and Grace Hopper (found = a box with IoU >= 0.5
with the reference box), and three composites (two faces on the coffee photo, the astronaut small in a
3000 x 2000 photo, Grace Hopper stored rotated with EXIF orientation 6).

Timings (one thread, the chosen detector; best of ``--rounds``): detection per photo, and the whole face
path per photo (detect, crop, translate the crops in one batch, paste back) with a light U-GAT-IT (ch 16,
random weights, 256 px) against the official way: the whole photo resized to 256 and translated.
"""

import argparse
import io
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt.xml",
            "haarcascade_frontalface_alt2.xml", "haarcascade_frontalface_alt_tree.xml")


def data():
    import real_photos as rp
    from PIL import Image, ImageOps

    two, two_boxes = rp.two_faces()
    small, small_box = rp.small_face_in_large()
    rotated = ImageOps.exif_transpose(Image.open(io.BytesIO(rp.exif_rotated_jpeg(rp.grace_hopper()))))
    named = {"astronaut": (rp.astronaut(), [rp.FACE_BOXES["astronaut"]]),
             "grace_hopper": (rp.grace_hopper(), [rp.FACE_BOXES["grace_hopper"]]),
             "two_faces": (two, two_boxes), "small_face_in_3000x2000": (small, [small_box]),
             "exif_rotated_grace_hopper": (rotated.convert("RGB"), [rp.FACE_BOXES["grace_hopper"]])}
    return rp, named, rp.lfw(True), rp.lfw(False), {n: rp.face_free(n) for n in rp.FACE_FREE}


def score(detector, rp, named, lfw_faces, lfw_other, free) -> dict:
    result = {"lfw_faces_found": sum(bool(detector.detect(img, 20)) for img in lfw_faces),
              "lfw_nonfaces_with_detection": sum(bool(detector.detect(img, 20)) for img in lfw_other),
              "face_free_photo_detections": sum(len(detector.detect(img, 20)) for img in free.values())}
    for name, (img, boxes) in named.items():
        found = detector.detect(img, 20)
        hits = sum(any(rp.iou(f, b) >= 0.5 for f in found) for b in boxes)
        result[name] = f"{hits}/{len(boxes)} found, {len(found) - hits} extra"
    return result


def best_time(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="measure the chosen detector only")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    from ugatit_cli.core import faces
    from ugatit_cli.families import get_family
    from ugatit_cli.families.base import Model
    from ugatit_cli.families.ugatit import Generator, UGATITConfig
    from ugatit_cli.media import translator_batches

    rp, named, lfw_faces, lfw_other, free = data()
    report = {"python": sys.version.split()[0], "opencv": cv2.__version__, "torch_threads": 1,
              "chosen": {"cascade": faces.DEFAULT_CASCADE, "min_neighbors": faces.DEFAULT_MIN_NEIGHBORS,
                         "scale_factor": faces.DEFAULT_SCALE_FACTOR}, "detectors": {}}
    configs = ([(faces.DEFAULT_CASCADE, faces.DEFAULT_MIN_NEIGHBORS)] if args.quick
               else [(c, n) for c in CASCADES for n in (3, 4, 5)])
    for cascade, neighbours in configs:
        detector = faces.FaceDetector(cascade, min_neighbors=neighbours)
        report["detectors"][f"{cascade.removeprefix('haarcascade_').removesuffix('.xml')} n{neighbours}"] = score(
            detector, rp, named, lfw_faces, lfw_other, free)

    torch.manual_seed(0)
    generator = Generator(UGATITConfig(img_size=256, ch=16, light=True)).eval()
    model = Model("ugatit", generator.config, {"a2b": generator})
    translate = translator_batches(get_family("ugatit").translator(model, "a2b", 256, {}))(Path("photo.png"))
    detector = faces.FaceDetector()
    timings = {}
    for name, (img, _) in named.items():
        detect = best_time(lambda img=img: detector.detect(img), args.rounds)
        whole = best_time(lambda img=img: translate([img]), args.rounds)
        total = best_time(lambda img=img: faces.translate_faces(img, translate, detector), args.rounds)
        timings[name] = {"size": list(img.size), "faces": len(detector.detect(img)),
                         "detect_ms": round(detect * 1000, 1), "faces_total_ms": round(total * 1000, 1),
                         "whole_photo_ms": round(whole * 1000, 1),
                         "faces_vs_whole_photo": round(total / whole, 2)}
    report["per_photo"] = timings
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
