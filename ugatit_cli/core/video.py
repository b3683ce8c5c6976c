"""Translate video files frame by frame with PyAV (FFmpeg's libraries): ``ugatit translate clip.mp4``.

Each clip becomes an MP4: H.264 (``libx264``, CRF :data:`DEFAULT_CRF`, yuv420p, even width and height) by
default. Every frame keeps its input timestamp (in the input's time base), so the frame rate, a variable
frame rate and the duration are those of the input; the first audio stream is copied packet for packet when
MP4 can hold its codec (AAC, MP3, Opus, FLAC, ALAC, AC-3) and re-encoded to AAC otherwise. Frames with
rotation metadata (phone clips: a display matrix) are turned upright before translation and written
upright without it. Frames are translated in batches through a :data:`~ugatit_cli.faces.BatchTranslator`,
so any model family works; with a face detector, the faces of each frame are translated and pasted back
(:mod:`ugatit_cli.faces`), their crops steadied from frame to frame (:class:`FaceTracker`).

The output is written under a temporary name and renamed when complete; a clip that cannot be translated
raises :class:`BadVideoError` with a one-line reason and leaves nothing behind. PyAV is an optional extra:
``pip install "ugatit-cli[video]"``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ProcessingError, UserError
from .faces import (
    DEFAULT_FACE_SCALE,
    DEFAULT_FEATHER,
    DEFAULT_MIN_FACE,
    BatchTranslator,
    Face,
    FaceDetector,
    as_outputs,
    cut_crops,
    paste_faces,
    square_crop,
)
from .files import atomic_file, walk_once

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".3gp",
                            ".wmv", ".flv"})
INSTALL_HINT = 'video needs PyAV: pip install "ugatit-cli[video]"'
#: x264's constant-rate factor: 18 is about visually lossless (x264's own default is 23).
DEFAULT_CRF = 18
DEFAULT_CODEC = "h264"
#: --codec names -> FFmpeg encoders; any other encoder name FFmpeg has is used as given.
CODEC_ALIASES = {"h264": "libx264", "x264": "libx264", "avc": "libx264", "h265": "libx265", "hevc": "libx265",
                 "x265": "libx265"}
#: Encoders whose quality knob is CRF.
CRF_ENCODERS = frozenset({"libx264", "libx265"})
#: Audio codecs copied into MP4 as they are; others are re-encoded to AAC.
MP4_AUDIO = frozenset({"aac", "mp3", "opus", "flac", "alac", "ac3", "eac3"})
#: Frames per translation call when none is given.
DEFAULT_VIDEO_BATCH = 4
#: Face crops follow detections with this weight per frame (the rest is the previous crop): steadier crops
#: flicker less (measured in benchmarks/video.py).
FACE_SMOOTHING = 0.3
#: A tracked face that is not detected keeps its crop for this many frames (a missed detection does not blink).
FACE_HOLD_FRAMES = 5


class BadVideoError(ProcessingError):
    """A video file that cannot be translated; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def import_av() -> Any:
    """PyAV, or :class:`UserError` with the install hint when the ``video`` extra is missing."""
    try:
        import av
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return av


def is_video_name(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def encoder_name(codec: str) -> str:
    """The FFmpeg encoder for ``--codec`` (``h264`` -> ``libx264``); UserError when FFmpeg has no such video
    encoder."""
    av = import_av()
    name = CODEC_ALIASES.get(codec.lower(), codec)
    try:
        found = av.codec.Codec(name, "w")
    except Exception:
        found = None
    if found is None or found.type != "video":
        raise UserError(f"unknown video codec {codec!r}; try h264 (the default), hevc or mpeg4")
    return name


@dataclass(frozen=True)
class FaceSettings:
    """Faces per frame: the detector and the crop settings of :func:`ugatit_cli.faces.translate_faces`."""

    detector: FaceDetector
    face_scale: float = DEFAULT_FACE_SCALE
    min_face: int = DEFAULT_MIN_FACE
    feather: float = DEFAULT_FEATHER
    smoothing: float = FACE_SMOOTHING


class FaceTracker:
    """Steadies face crops across frames: each detection is matched to the nearest tracked face (IoU > 0.3)
    and the tracked box moves ``smoothing`` of the way to it; an unmatched tracked face is kept for
    :data:`FACE_HOLD_FRAMES` frames. ``smoothing=1`` follows the detector exactly."""

    def __init__(self, settings: FaceSettings):
        self.settings = settings
        self.tracks: list[list[float]] = []  # x, y, w, h, frames since seen

    def update(self, img: Image.Image) -> list[Face]:
        s = self.settings
        boxes = s.detector.detect(img, s.min_face)
        unmatched = list(range(len(self.tracks)))
        for box in boxes:
            best = max(unmatched, key=lambda i: _iou(self.tracks[i], box), default=None)
            if best is not None and _iou(self.tracks[best], box) > 0.3:
                track = self.tracks[best]
                unmatched.remove(best)
                for k in range(4):
                    track[k] += s.smoothing * (box[k] - track[k])
                track[4] = 0
            else:
                self.tracks.append([*map(float, box), 0])
        for i in unmatched:
            self.tracks[i][4] += 1
        self.tracks = [t for t in self.tracks if t[4] <= FACE_HOLD_FRAMES]
        faces = []
        for t in sorted(self.tracks, key=lambda t: t[0]):
            box = tuple(round(v) for v in t[:4])
            faces.append(Face(box, square_crop(box, img.size, s.face_scale)))
        return faces


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / max(1e-9, a[2] * a[3] + b[2] * b[3] - inter)


@dataclass
class VideoResult:
    """One translated clip: ``frames`` written in ``seconds``; ``audio`` says what became of the sound
    (``"copied"``, ``"re-encoded to AAC"`` or None when the clip had none)."""

    source: Path
    output: Path
    frames: int
    seconds: float
    width: int
    height: int
    audio: str | None = None
    faces: int = 0  # face crops translated, over all frames
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _reason(exc: Exception) -> str:
    text = str(exc)
    lowered = text.lower()
    if "moov atom not found" in lowered or "end of file" in lowered or "truncat" in lowered:
        return "truncated or corrupt video file (the container's index is missing)"
    if "invalid data" in lowered:
        return "truncated, corrupt or not a video file (FFmpeg found invalid data)"
    return f"cannot read the video ({type(exc).__name__}: {text})"


def _declared_seconds(stream: Any) -> float | None:
    """The video stream's own duration (MP4: in its header; Matroska: its DURATION tag), if it states one."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    try:
        h, m, sec = tag.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except (AttributeError, ValueError):
        return None


def _upright(frame: Any) -> Image.Image:
    """The decoded frame as an RGB image turned as players show it (its display matrix applied)."""
    img = frame.to_image()
    rotation = round(getattr(frame, "rotation", 0) or 0) % 360
    turns = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    return img.transpose(turns[rotation]) if rotation in turns else img


def translate_video(
    source: str | os.PathLike,
    output: str | os.PathLike,
    translate_batch: BatchTranslator,
    *,
    batch_size: int = DEFAULT_VIDEO_BATCH,
    keep_size: bool = True,
    crf: int = DEFAULT_CRF,
    codec: str = DEFAULT_CODEC,
    faces: FaceSettings | None = None,
    blend: float = 0.0,
    on_frame: Callable[[int, int | None], None] | None = None,
) -> VideoResult:
    """Translate every frame of ``source`` into the MP4 ``output`` (written under a temporary name, renamed).

    ``translate_batch`` gets up to ``batch_size`` frames (or, with ``faces``, all the face crops of that many
    frames) per call. ``keep_size`` writes frames at the clip's (upright) size rounded down to even numbers,
    otherwise at the translator's output size. ``blend`` (0 to <1) mixes that share of the previous output
    frame into each one (a temporal low-pass against flicker; 0 is off). ``on_frame(done, total)`` is called
    after each frame is encoded (``total`` None when the container does not say).

    Raises :class:`BadVideoError` for a file that is missing, empty, truncated, not a video, without video
    frames or in a codec FFmpeg cannot decode; :class:`UserError` for bad options.
    """
    av = import_av()
    source, output = Path(source), Path(output)
    encoder = encoder_name(codec)
    if not 0 <= crf <= 51:
        raise UserError(f"crf must be between 0 and 51, got {crf}")
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    if not 0 <= blend < 1:
        raise UserError(f"blend must be at least 0 and below 1, got {blend}")
    if not source.exists():
        raise BadVideoError(source, "no such file")
    if source.stat().st_size == 0:
        raise BadVideoError(source, "empty file (0 bytes)")
    start = time.perf_counter()
    try:
        container = av.open(str(source), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise BadVideoError(source, _reason(exc)) from None
    with container:
        if not container.streams.video:
            raise BadVideoError(source, "no video stream (audio only)" if container.streams.audio
                                else "no video stream")
        vin = container.streams.video[0]
        if vin.codec_context is None or vin.codec_context.codec is None:
            raise BadVideoError(source, "unsupported video codec (FFmpeg has no decoder for it)")
        ain = container.streams.audio[0] if container.streams.audio else None
        job = _Encoding(av, source, vin, ain, translate_batch, batch_size, keep_size, encoder, crf, faces, blend,
                        on_frame)
        try:
            with atomic_file(output) as tmp:
                job.run(container, tmp)
        except av.error.FFmpegError as exc:
            raise BadVideoError(source, f"corrupt or truncated video data after frame {job.frames} "
                                        f"({type(exc).__name__})") from None
    width, height = job.size or (0, 0)
    return VideoResult(source, output, job.frames, time.perf_counter() - start, width, height, job.audio_mode,
                       job.face_count)


class _Encoding:
    """The state of one clip's translation: decode, batch, translate, encode and mux."""

    def __init__(self, av: Any, source: Path, vin: Any, ain: Any, translate_batch: BatchTranslator,
                 batch_size: int, keep_size: bool, encoder: str, crf: int, faces: FaceSettings | None,
                 blend: float, on_frame: Callable[[int, int | None], None] | None):
        self.av, self.source, self.vin, self.ain = av, source, vin, ain
        self.translate_batch, self.batch_size, self.keep_size = translate_batch, batch_size, keep_size
        self.encoder, self.crf, self.blend, self.on_frame = encoder, crf, blend, on_frame
        self.tracker = FaceTracker(faces) if faces is not None else None
        self.faces = faces
        self.frames = 0
        self.decoded = 0
        self.last_time: float | None = None  # seconds of the latest frame start
        self.face_count = 0
        self.size: tuple[int, int] | None = None
        self.audio_mode: str | None = None
        self.total = vin.frames or None
        self.previous: np.ndarray | None = None
        self.out: Any = None
        self.vout: Any = None
        self.aout: Any = None
        self.audio_copy = False
        self.pending_audio: list[Any] = []

    def run(self, container: Any, tmp: Path) -> None:
        av = self.av
        self.out = av.open(str(tmp), "w", format="mp4")
        try:
            if self.ain is not None:
                self._add_audio()
            batch: list[tuple[int, Image.Image]] = []
            streams = [s for s in (self.vin, self.ain) if s is not None]
            for packet in container.demux(*streams):
                if packet.stream is self.ain:
                    self._audio(packet)
                    continue
                for frame in packet.decode():
                    self.decoded += 1
                    pts = self._pts(frame)
                    start = self.vin.start_time or 0
                    self.last_time = max(self.last_time or 0.0, float((pts - start) * self.vin.time_base))
                    batch.append((pts, _upright(frame)))
                    if len(batch) == self.batch_size:
                        self._encode(batch)
                        batch = []
            if batch:
                self._encode(batch)
            if self.vout is None:
                raise BadVideoError(self.source, "no video frames")
            self._check_complete()
            for packet in self.vout.encode(None):
                self.out.mux(packet)
            self._flush_audio()
        finally:
            self.out.close()

    def _check_complete(self) -> None:
        """A file cut short can still decode: compare with the frame count or duration it declares."""
        declared = self.vin.frames
        if declared and self.decoded < declared:
            raise BadVideoError(self.source, f"truncated: {self.decoded} of the {declared} frames it declares "
                                             "could be decoded")
        duration = _declared_seconds(self.vin)
        rate = self.vin.average_rate or self.vin.guessed_rate
        if duration and rate and self.last_time is not None:
            interval = 1 / float(rate)
            if self.last_time + interval < duration - 2 * interval:
                raise BadVideoError(self.source, f"truncated: the video stops at {self.last_time + interval:.2f} s "
                                                 f"of the {duration:.2f} s it declares")

    def _pts(self, frame: Any) -> int:
        """The frame's timestamp in the input time base (synthesised from the frame rate when missing)."""
        if frame.pts is not None:
            return int(frame.pts)
        rate = self.vin.average_rate or self.vin.guessed_rate or Fraction(25)
        return round((self.decoded - 1) / (rate * self.vin.time_base))

    def _add_audio(self) -> None:
        name = self.ain.codec_context.name if self.ain.codec_context is not None else None
        if name in MP4_AUDIO:
            self.aout = self.out.add_stream_from_template(self.ain)
            self.audio_copy, self.audio_mode = True, "copied"
        elif name is not None:
            rate = self.ain.codec_context.sample_rate or 48000
            self.aout = self.out.add_stream("aac", rate=rate)
            self.audio_mode = "re-encoded to AAC"

    def _audio(self, packet: Any) -> None:
        if self.aout is None:
            return
        if self.audio_copy:
            if packet.dts is None:  # the demuxer's flush packet
                return
            packet.stream = self.aout
            items = [packet]
        else:
            items = [p for frame in packet.decode() for p in self.aout.encode(frame)]
        if self.vout is None:  # the MP4 header waits for the video stream; keep the sound until then
            self.pending_audio += items
        else:
            for item in items:
                self.out.mux(item)

    def _flush_audio(self) -> None:
        if self.aout is not None and not self.audio_copy:
            for item in self.aout.encode(None):
                self.out.mux(item)

    def _open_video(self, first: Image.Image) -> None:
        if self.keep_size:
            width, height = first.width, first.height
        else:
            width, height = self.result_size
        width, height = max(2, width // 2 * 2), max(2, height // 2 * 2)
        rate = self.vin.average_rate or self.vin.guessed_rate or Fraction(25)
        vout = self.out.add_stream(self.encoder, rate=rate)
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        vout.time_base = self.vin.time_base
        vout.codec_context.time_base = self.vin.time_base
        if self.encoder in CRF_ENCODERS:
            vout.options = {"crf": str(self.crf)}
        self.vout, self.size = vout, (width, height)
        for item in self.pending_audio:
            self.out.mux(item)
        self.pending_audio = []

    def _translate(self, images: list[Image.Image]) -> list[Image.Image]:
        if self.tracker is None:
            results = [as_outputs(r)["image"] for r in self.translate_batch(images)]
            self.result_size = results[0].size
            return results
        frame_faces = [self.tracker.update(img) for img in images]
        crops = [crop for img, found in zip(images, frame_faces, strict=True) for crop in cut_crops(img, found)]
        translated = [as_outputs(r)["image"] for r in self.translate_batch(crops)] if crops else []
        self.face_count += len(crops)
        self.result_size = images[0].size
        out, i = [], 0
        for img, found in zip(images, frame_faces, strict=True):
            out.append(paste_faces(img, found, translated[i:i + len(found)], self.faces.feather) if found else img)
            i += len(found)
        return out

    def _encode(self, batch: list[tuple[int, Image.Image]]) -> None:
        results = self._translate([img for _, img in batch])
        if self.vout is None:
            self._open_video(batch[0][1])
        width, height = self.size
        for (pts, _), img in zip(batch, results, strict=True):
            if img.size != (width, height):
                img = img.resize((width, height), Image.Resampling.BICUBIC)
            pixels = np.asarray(img.convert("RGB"))
            if self.blend and self.previous is not None:
                pixels = np.rint(pixels * (1 - self.blend) + self.previous * self.blend).astype(np.uint8)
            self.previous = pixels.astype(np.float32) if self.blend else None
            frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = pts, self.vin.time_base
            for packet in self.vout.encode(frame):
                self.out.mux(packet)
            self.frames += 1
            if self.on_frame is not None:
                self.on_frame(self.frames, self.total)


def probe_frames(path: str | os.PathLike) -> int | None:
    """The number of frames a clip declares (or its duration times its rate), None when it does not say or
    cannot be read (:func:`translate_video` then names the reason)."""
    av = import_av()
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            seconds, rate = _declared_seconds(stream), stream.average_rate or stream.guessed_rate
            return round(seconds * float(rate)) if seconds and rate else None
    except Exception:  # whatever FFmpeg says about a bad file is reported by translate_video
        return None


def collect_videos(folder: Path) -> Iterator[Path]:
    """Video-named files under ``folder`` (recursive, sorted, hidden ones skipped)."""
    for root, _, files in walk_once(folder):  # links that loop are walked once
        for name in sorted(files):
            if not name.startswith(".") and is_video_name(Path(name)):
                yield Path(root) / name
