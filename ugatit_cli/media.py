"""The parts of ``ugatit translate`` for real photos and clips: ``--faces`` on images and video inputs.

:func:`split_videos` takes the video files (and the videos inside folders) out of the inputs before the image
pipeline sees them; :func:`translate_face_images` and :func:`translate_videos` then do the work with any
model family through a :data:`~ugatit_cli.faces.BatchTranslator`, filling the same report as the image
pipeline (``done``, ``skipped`` with reason, ``failed`` with reason).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .core.faces import (
    DEFAULT_FACE_SCALE,
    DEFAULT_MIN_FACE,
    BatchTranslator,
    FaceDetector,
    import_cv2,
    translate_faces,
)
from .core.images import (
    BadImageError,
    InputImage,
    folder_prefix,
    glob_relative,
    is_image_name,
    jet_image,
    open_rgb,
    pixels_to_tensor,
    resized_pixels,
    save_image_atomic,
    tensor_to_pixels,
    walk_once,
)
from .core.progress import count_progress
from .errors import UserError
from .families.base import Translator

if TYPE_CHECKING:  # pragma: no cover
    import torch

FACE_MODES = ("composite", "crops")
#: Makes the :data:`BatchTranslator` for one input file (a family's ``prepare`` may read files beside it).
BatchFor = Callable[[Path], BatchTranslator]
NO_FACE_REASON = "no face found"


@dataclass(frozen=True)
class FaceOptions:
    """``--faces MODE --face-scale F --min-face PX``: what to do with the faces of each photo or frame."""

    mode: str = "composite"
    face_scale: float = DEFAULT_FACE_SCALE
    min_face: int = DEFAULT_MIN_FACE

    def __post_init__(self) -> None:
        if self.mode not in FACE_MODES:
            raise UserError(f"unknown --faces mode {self.mode!r}; expected composite or crops")
        if self.face_scale < 1:
            raise UserError(f"--face-scale must be at least 1 (the crop holds the face), got {self.face_scale}")
        if self.min_face < 1:
            raise UserError(f"--min-face must be at least 1 pixel, got {self.min_face}")


@dataclass(frozen=True)
class VideoOptions:
    """``--crf N --codec NAME --blend F`` and the frames per translation call."""

    crf: int | None = None
    codec: str | None = None
    batch_size: int | None = None
    blend: float = 0.0


def check_extras(faces: FaceOptions | None, videos: Sequence[InputImage], options: VideoOptions) -> None:
    """Before any model is loaded: the extras the work needs are installed, and the options fit the inputs
    (UserError otherwise)."""
    if faces is not None:
        import_cv2()
    if videos:
        from .core.video import DEFAULT_CODEC, encoder_name, import_av

        import_av()
        encoder_name(options.codec or DEFAULT_CODEC)
        if faces is not None and faces.mode == "crops":
            raise UserError("--faces crops applies to photos; for videos use --faces (composite)")
    if options.crf is not None and not 0 <= options.crf <= 51:
        raise UserError(f"--crf must be between 0 and 51, got {options.crf}")
    if not 0 <= options.blend < 1:
        raise UserError(f"--blend must be at least 0 and below 1, got {options.blend}")


def _video_names(path: Path) -> bool:
    from .core.video import is_video_name

    return is_video_name(path)


def split_videos(sources: Sequence[str | os.PathLike]) -> tuple[list[str | os.PathLike], list[InputImage]]:
    """Video files named directly, and the videos inside named folders (recursive, relative paths kept as for
    images), out of ``sources``. Returns the sources left for the image pipeline (a folder that holds only
    videos is left out of them, so that it is not reported as "contains no images") and the videos."""
    from .core.video import collect_videos

    several = True  # the stable layout (core.images.collect_images): a folder keeps its name
    rest: list[str | os.PathLike] = []
    videos: list[InputImage] = []
    for raw in sources:
        path = Path(raw)
        if path.is_dir():
            found = list(collect_videos(path))
            prefix = folder_prefix(path, several)
            videos += [InputImage(f, prefix / f.relative_to(path)) for f in found]
            if found and not _holds_images(path):
                continue
        elif _video_names(path) and (path.exists() or path.is_symlink()):
            videos.append(InputImage(path, Path(path.name)))
            continue
        elif not path.exists() and glob.has_magic(str(raw)):
            matches = sorted(Path(m) for m in glob.glob(str(raw), recursive=True))
            found = [m for m in matches if not m.is_dir() and _video_names(m)]
            if found:
                videos += [InputImage(m, glob_relative(m, str(raw), True)) for m in found]
                rest += [str(m) for m in matches if not m.is_dir() and m not in found]
                continue
        rest.append(raw)
    return rest, videos


def _holds_images(folder: Path) -> bool:
    for _, _, files in walk_once(folder):
        if any(not f.startswith(".") and is_image_name(Path(f)) for f in files):
            return True
    return False


@dataclass(frozen=True)
class Done:
    """An input and the files written for it (``extras``: further files by key)."""

    source: Path
    output: Path
    extras: dict[str, Path]


def translator_batches(translator: Any, *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                       memory_format: torch.memory_format | None = None) -> BatchFor:
    """A family's :class:`~ugatit_cli.families.base.Translator` (or an ONNX Runtime
    :class:`~ugatit_cli.onnx_backend.GraphTranslator`) as a :data:`BatchFor`: each crop or frame is prepared
    like an image input (bilinear resize to the translator's size, ``prepare(source, pixels)``), the batch runs
    through ``forward`` under inference mode (and autocast with ``dtype``; a graph translator in NumPy), and
    every output of ``translator.outputs`` comes back as an RGB image of the model's size (one-channel maps
    drawn in jet)."""
    size = translator.size
    if hasattr(translator, "forward_arrays"):  # an ONNX graph: no torch
        def run(stacked: dict[str, np.ndarray]) -> dict[str, Any]:
            return translator.render(translator.forward_arrays(stacked))
    else:
        run = _torch_forward(translator, device, dtype, memory_format)

    def for_source(source: Path) -> BatchTranslator:
        def translate(images: list[Image.Image]) -> list[dict[str, Image.Image]]:
            if not images:
                return []
            pixels = [resized_pixels(img.convert("RGB"), size) for img in images]
            prepared = [translator.prepare(source, p) for p in pixels]
            rendered = run({"pixels": np.stack(pixels)} | {key: np.stack([p[key] for p in prepared])
                                                            for key in prepared[0]})
            return [{spec.key: Image.fromarray(rendered[spec.key][i], mode="RGB") if spec.kind == "image"
                     else jet_image(rendered[spec.key][i], (size, size)) for spec in translator.outputs}
                    for i in range(len(images))]

        return translate

    return for_source


def _torch_forward(translator: Translator, device: torch.device | str, dtype: torch.dtype | None,
                   memory_format: torch.memory_format | None) -> Callable[[dict[str, np.ndarray]], dict[str, Any]]:
    """Stacked arrays -> rendered outputs (uint8 pixels B x H x W x 3, float maps) through ``translator.forward``."""
    import torch

    from .core.devices import autocast

    device = torch.device(device)
    memory_format = memory_format or torch.contiguous_format

    def run(stacked: dict[str, np.ndarray]) -> dict[str, Any]:
        tensors = {key: torch.from_numpy(value).to(device) for key, value in stacked.items()}
        x = pixels_to_tensor(tensors.pop("pixels")).contiguous(memory_format=memory_format)
        with torch.inference_mode(), autocast(device, dtype):
            outputs = translator.forward(x, tensors)
            return {spec.key: tensor_to_pixels(outputs[spec.key]).contiguous().cpu().numpy()
                    if spec.kind == "image" else outputs[spec.key].float().cpu() for spec in translator.outputs}

    return run


def translate_face_images(images: Sequence[InputImage], output_dir: Path, batch_for: BatchFor,
                          options: FaceOptions, *, extras: Sequence[tuple[str, str]] = (), overwrite: bool,
                          progress: bool, done: Callable[[Done], None], skipped: Callable[[Path, Path, str], None],
                          failed: Callable[[str, str], None]) -> None:
    """Per photo: detect the faces, translate their crops in one batch, write the composite ``NAME.png`` (or,
    in ``crops`` mode, ``NAME_face0.png`` ...) and, per ``(key, suffix)`` of ``extras`` (e.g. ``("heatmap",
    "_heatmap")``), each crop's extra output as ``NAME_face0_heatmap.png`` ...

    A photo without faces is reported through ``skipped`` with "no face found"; one whose outputs exist
    (unless ``overwrite``) as skipped too; an unreadable one through ``failed``.
    """
    detector = FaceDetector()
    with count_progress("translating faces", len(images), "photos", enabled=progress) as advance:
        for image in images:
            try:
                _one_photo(image, output_dir, batch_for(image.path), detector, options, extras, overwrite, done,
                           skipped)
            except BadImageError as exc:
                failed(str(image.path), exc.reason)
            finally:
                advance()


def _one_photo(image: InputImage, output_dir: Path, translate_batch: BatchTranslator, detector: FaceDetector,
               options: FaceOptions, extras: Sequence[tuple[str, str]], overwrite: bool,
               done: Callable[[Done], None], skipped: Callable[[Path, Path, str], None]) -> None:
    base = output_dir / image.relative.with_suffix(".png")
    composite = options.mode == "composite"
    first = base if composite else base.with_name(f"{base.stem}_face0.png")
    if first.exists() and not overwrite:
        skipped(image.path, first, "output exists (pass --overwrite to replace it)")
        return
    img = open_rgb(image.path)
    result = translate_faces(img, translate_batch, detector, face_scale=options.face_scale,
                             min_face=options.min_face, composite=composite)
    if not result.faces:
        skipped(image.path, base, NO_FACE_REASON)
        return
    writes: list[tuple[str, Path, Image.Image]] = []
    if composite:
        writes.append(("image", base, result.composite))
    for i, outputs in enumerate(result.crops):
        if not composite:
            writes.append((f"face{i}", base.with_name(f"{base.stem}_face{i}.png"), outputs["image"]))
        for key, suffix in extras:
            if key in outputs:
                writes.append((f"{key}{i}", base.with_name(f"{base.stem}_face{i}{suffix}.png"), outputs[key]))
    for _, path, picture in writes:
        try:
            save_image_atomic(picture, path)
        except OSError as exc:
            raise BadImageError(image.path, f"cannot write {path} ({exc.strerror or exc})") from None
    done(Done(image.path, writes[0][1], {key: path for key, path, _ in writes[1:]}))


def translate_videos(videos: Sequence[InputImage], output_dir: Path, batch_for: BatchFor,
                     options: VideoOptions, faces: FaceOptions | None, *, keep_size: bool, overwrite: bool,
                     progress: bool, done: Callable[[Done], None], skipped: Callable[[Path, Path, str], None],
                     failed: Callable[[str, str], None]) -> int:
    """Each clip to ``output_dir/RELATIVE.mp4`` with :func:`ugatit_cli.video.translate_video`; returns the
    number of frames written. Clips whose output exists are skipped unless ``overwrite``; bad clips fail
    with their reason (nothing is written for them)."""
    from .core.video import (
        DEFAULT_CODEC,
        DEFAULT_CRF,
        DEFAULT_VIDEO_BATCH,
        BadVideoError,
        FaceSettings,
        probe_frames,
        translate_video,
    )

    settings = None
    if faces is not None:
        if faces.mode != "composite":
            raise UserError("--faces crops applies to photos; for videos use --faces (composite)")
        settings = FaceSettings(FaceDetector(), face_scale=faces.face_scale, min_face=faces.min_face)
    frames = 0
    claimed: set[Path] = set()
    for video in videos:
        out = output_dir / video.relative.with_suffix(".mp4")
        if out in claimed:
            out = output_dir / video.relative.with_name(video.relative.name + ".mp4")
        claimed.add(out)
        if out.exists() and not overwrite:
            skipped(video.path, out, "output exists (pass --overwrite to replace it)")
            continue
        with count_progress(f"translating {video.path.name}", probe_frames(video.path), "frames",
                            enabled=progress) as advance:
            try:
                result = translate_video(video.path, out, batch_for(video.path),
                                         batch_size=options.batch_size or DEFAULT_VIDEO_BATCH, keep_size=keep_size,
                                         crf=DEFAULT_CRF if options.crf is None else options.crf,
                                         codec=options.codec or DEFAULT_CODEC, faces=settings, blend=options.blend,
                                         on_frame=lambda done, total: advance())
            except BadVideoError as exc:
                failed(str(video.path), exc.reason)
                continue
        frames += result.frames
        done(Done(video.path, out, {}))
    return frames
