"""Small video clips made with PyAV from the real photos of tests/real_photos.py: a slow pan and a zoom, with
a sine-tone audio track, and the odd files phones and cameras make."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

TONE_HZ = 440


def pan(photo: Image.Image, frames: int, size: tuple[int, int], step: int = 2,
        top: int | None = None) -> list[Image.Image]:
    """A window of ``size`` (w, h) moving ``step`` px right per frame across ``photo`` (a slow pan), at
    ``top`` (default: centred)."""
    w, h = size
    top = (photo.height - h) // 2 if top is None else top
    return [photo.crop((i * step, top, i * step + w, top + h)) for i in range(frames)]


def zoom(photo: Image.Image, frames: int, size: tuple[int, int]) -> list[Image.Image]:
    """A centred window shrinking from the whole photo to its middle half, resized to ``size``."""
    out = []
    for i in range(frames):
        f = 1 - 0.5 * i / max(1, frames - 1)
        cw, ch = photo.width * f, photo.height * f
        left, top = (photo.width - cw) / 2, (photo.height - ch) / 2
        out.append(photo.crop((round(left), round(top), round(left + cw), round(top + ch))).resize(size))
    return out


def write_clip(path: Path, images: list[Image.Image], *, fps: int = 10, audio: bool = True, codec: str = "libx264",
               pix_fmt: str = "yuv420p", rotation: int | None = None, pts: list[int] | None = None,
               time_base: Fraction | None = None, audio_codec: str = "aac", fmt: str | None = None) -> Path:
    """Encode ``images`` (``pts`` in ``time_base`` for a variable frame rate) with a sine tone as long as the
    video; ``rotation`` stores a display matrix (counter-clockwise degrees, as phones do)."""
    import av

    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = images[0].width, images[0].height, pix_fmt
        tb = time_base or Fraction(1, fps)
        video.codec_context.time_base = tb
        if rotation is not None:
            video.set_display_rotation(rotation)
        sound = out.add_stream(audio_codec, rate=44100) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for i, img in enumerate(images):
            frame = av.VideoFrame.from_ndarray(np.asarray(img.convert("RGB")), format="rgb24").reformat(format=pix_fmt)
            frame.pts, frame.time_base = (pts[i] if pts else i), tb
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            seconds = (pts[-1] * tb + tb) if pts else Fraction(len(images), fps)
            samples = int(44100 * seconds)
            t = np.arange(samples) / 44100
            wave = (0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)[None, :]
            fmt_name = "fltp" if audio_codec == "aac" else "s16"
            data = wave if fmt_name == "fltp" else (wave * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(data, format=fmt_name, layout="mono")
            frame.sample_rate, frame.pts = 44100, 0
            out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


def read_clip(path: Path) -> dict:
    """Frames (upright RGB arrays), their timestamps in seconds, the rate, and the audio (codec, samples)."""
    import av

    with av.open(str(path)) as container:
        v = container.streams.video[0]
        frames, times, rotations = [], [], []
        for frame in container.decode(v):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * frame.time_base))
            rotations.append(frame.rotation)
        info = {"frames": frames, "times": times, "rate": v.average_rate, "codec": v.codec_context.name,
                "pix_fmt": v.codec_context.pix_fmt, "rotations": rotations,
                "duration": float(container.duration / 1e6) if container.duration else None}
    with av.open(str(path)) as container:
        if container.streams.audio:
            a = container.streams.audio[0]
            info["audio_codec"] = a.codec_context.name
            info["audio"] = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(a)])
            info["audio_rate"] = a.codec_context.sample_rate
    return info
