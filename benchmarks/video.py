"""Video translation speed and flicker; prints one JSON object.

    OMP_NUM_THREADS=1 python benchmarks/video.py                 # 48 frames, 256 px light ch16 model
    python benchmarks/video.py --frames 24 --size 128

The clip: a slow pan (1 px per frame, 10 fps, 320 x 400 from the top, face in the middle, sine-tone audio)
across scikit-image's astronaut, made with PyAV (tests/clips.py). The model: a light U-GAT-IT (ch 16, random
weights, one thread).

Speed: ``translate_video`` (decode, translate in batches, encode H.264, copy the audio) in frames/s,
against the way without it: extract the frames as PNGs with PyAV, translate them with
``ugatit_cli.translate`` as images (keep-size), and encode the PNGs back to H.264.

Flicker: mean absolute difference (0-255) between consecutive decoded output frames, against the same for
the input frames, for the plain per-frame translation, for ``blend`` (a share of the previous output frame
mixed into each) and, with faces, for raw per-frame detections (``smoothing=1``) against steadied crops
(also over the face's region alone, rows 0-260 and columns 40-280, which the face stays in).
``deviation`` is how far a remedy's frames are from the plain translation (what the blend costs in ghosting).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]


def mad_consecutive(frames) -> float:
    import numpy as np

    return float(np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(frames, frames[1:], strict=False)]))


def face_region(frames):
    return [f[:260, 40:280] for f in frames]


def deviation(frames, reference) -> float:
    import numpy as np

    return float(np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(frames, reference, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=256, help="the model's size")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    import av
    import cv2
    import torch
    from PIL import Image

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    import clips
    import real_photos as rp

    from ugatit_cli.core.faces import FaceDetector
    from ugatit_cli.core.video import FaceSettings, translate_video
    from ugatit_cli.families import get_family
    from ugatit_cli.families.base import Model
    from ugatit_cli.families.model_folder import write_model_folder
    from ugatit_cli.families.ugatit import Generator, UGATITConfig
    from ugatit_cli.families.ugatit.family import UGATITModel
    from ugatit_cli.media import translator_batches
    from ugatit_cli.translation import translate

    torch.manual_seed(0)
    config = UGATITConfig(img_size=args.size, ch=16, light=True)
    generator = Generator(config).eval()
    model = Model("ugatit", config, {"a2b": generator})
    forward = translator_batches(get_family("ugatit").translator(model, "a2b", args.size, {}))(Path("clip.mp4"))
    report = {"frames": args.frames, "model": f"light ch16 {args.size} px, random weights", "torch_threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photo = rp.astronaut().resize((640, 640), Image.Resampling.LANCZOS).crop((100, 0, 640, 640))
        src = clips.write_clip(tmp / "pan.mp4", clips.pan(photo, args.frames, (320, 400), step=1, top=0))
        source = clips.read_clip(src)

        start = time.perf_counter()
        translate_video(src, tmp / "video.mp4", forward, batch_size=args.batch_size)
        video_seconds = time.perf_counter() - start
        plain = clips.read_clip(tmp / "video.mp4")["frames"]

        # the way without video support: frames out as PNGs, translated as images, encoded back
        model_dir = tmp / "model"
        write_model_folder(UGATITModel(config, {"a2b": generator}), model_dir)
        start = time.perf_counter()
        (tmp / "frames").mkdir()
        with av.open(str(src)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                frame.to_image().save(tmp / "frames" / f"{i:05d}.png")
        extracted = time.perf_counter()
        translate(tmp / "frames", model_dir, output=tmp / "translated", keep_size=True, progress=False,
                  batch_size=args.batch_size)
        translated = time.perf_counter()
        pngs = sorted((tmp / "translated").glob("*.png"))
        with av.open(str(tmp / "images.mp4"), "w") as out:
            stream = out.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = 320, 400, "yuv420p"
            stream.options = {"crf": "18"}
            for i, png in enumerate(pngs):
                frame = av.VideoFrame.from_image(Image.open(png).convert("RGB"))
                frame.pts = i
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        images_seconds = time.perf_counter() - start
        report["speed"] = {
            "translate_video_fps": round(args.frames / video_seconds, 2),
            "frames_as_images_fps": round(args.frames / images_seconds, 2),
            "frames_as_images_split_s": {"extract": round(extracted - start, 2),
                                         "translate": round(translated - extracted, 2),
                                         "encode": round(time.perf_counter() - translated, 2)},
            "video_vs_images": round(images_seconds / video_seconds, 2),
        }

        flicker = {"input": round(mad_consecutive(source["frames"]), 2),
                   "output_plain": round(mad_consecutive(plain), 2)}
        for blend in (0.3, 0.5):
            translate_video(src, tmp / f"blend{blend}.mp4", forward, batch_size=args.batch_size, blend=blend)
            frames = clips.read_clip(tmp / f"blend{blend}.mp4")["frames"]
            flicker[f"output_blend_{blend}"] = round(mad_consecutive(frames), 2)
            flicker[f"output_blend_{blend}_deviation"] = round(deviation(frames, plain), 2)
        detector = FaceDetector()
        for smoothing in (1.0, 0.3):
            out = tmp / f"faces{smoothing}.mp4"
            start = time.perf_counter()
            result = translate_video(src, out, forward, batch_size=args.batch_size,
                                     faces=FaceSettings(detector, smoothing=smoothing))
            seconds = time.perf_counter() - start
            report.setdefault("face_crops", {})[f"smoothing_{smoothing}"] = result.faces
            frames = clips.read_clip(out)["frames"]
            flicker[f"faces_smoothing_{smoothing}"] = round(mad_consecutive(frames), 2)
            flicker[f"faces_smoothing_{smoothing}_face_region"] = round(mad_consecutive(face_region(frames)), 2)
            report["speed"][f"faces_smoothing_{smoothing}_fps"] = round(args.frames / seconds, 2)
        flicker["input_face_region"] = round(mad_consecutive(face_region(source["frames"])), 2)
        report["flicker_mad"] = flicker
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
