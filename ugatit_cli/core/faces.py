"""Faces in real photos: detect each face, cut a square crop framed like the training data, translate all crops
of a photo in one batch, and paste each result back with a feathered mask.

Why: models such as selfie2anime were trained on square crops in which one face with its hair fills the
frame (the selfie data set of Kalantidis et al., 306 x 306 selfies, resized to 256; the anime side are face
crops). A whole phone photo squashed to 256 x 256 is far from that; a crop around each face is close to it.

Detector: OpenCV's Haar cascade ``haarcascade_frontalface_alt2.xml`` (Viola-Jones; the XML ships inside the
``opencv-python-headless`` wheel, so it works offline on a fresh install; Intel's BSD-style licence). It was
chosen by measurement (``python benchmarks/faces.py``), see :data:`DEFAULT_CASCADE`. OpenCV's YuNet
(``cv2.FaceDetectorYN``) needs an ONNX file that no wheel ships and that could not be fetched to be measured
here, so it is not used.

Framing: the detector's box covers brows to mouth, about the width of the face. The crop is a square
:data:`DEFAULT_FACE_SCALE` times the box's side, centred on the box moved up by :data:`CROP_SHIFT` of its
side, so that it holds the hair above and the chin below (the selfie data frame head and shoulders: the face
is about half the frame's width). A crop that would leave the photo is moved back inside it (never padded:
what is pasted back is then always real pixels of the photo's own size); a crop larger than the photo's
short side is shrunk to it.

Paste-back: each translated crop is resized to its square (Lanczos) and blended in with a mask that is 1 in
the middle and falls to 0 at the square's border with a smoothstep over :data:`DEFAULT_FEATHER` of its side.
Pixels outside the squares are never written, so they stay byte-identical to the photo.

The model is reached through one callable, a :data:`BatchTranslator`: RGB crops in, one output per crop
(an RGB image, or a mapping with ``"image"`` and optional extra images such as ``"heatmap"``) out, so any
family (U-GAT-IT, TUNIT with a reference) can be used. OpenCV is an optional extra: ``pip install
"ugatit-cli[faces]"``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..errors import UserError

#: The Haar cascade used. Measured on the real photos that ship in pip packages (benchmarks/faces.py,
#: scale factor 1.1, min neighbours 4): lfw_subset faces 98/100 found, 0/100 non-face patches with a
#: detection, 1 detection on 12 face-free scikit-image photos (the cell micrograph), astronaut, Grace Hopper,
#: both faces of a two-face composite, an EXIF-rotated face and an 84 px face in a 3000 x 2000 photo found.
#: ``default`` found as many faces but made 6-11 detections on the face-free photos; ``alt`` missed the small
#: face; ``alt_tree`` found about half.
DEFAULT_CASCADE = "haarcascade_frontalface_alt2.xml"
DEFAULT_MIN_NEIGHBORS = 4
DEFAULT_SCALE_FACTOR = 1.1
#: Crop side / detector box side. Training selfies frame head and shoulders, the face about half the frame.
DEFAULT_FACE_SCALE = 2.0
#: The crop's centre is moved up by this share of the box side: more hair above than neck below.
CROP_SHIFT = 0.1
#: Faces smaller than this (detector box side in photo pixels) are ignored: upscaled to 256 px they are mush.
DEFAULT_MIN_FACE = 48
#: Width of the blend ramp at the crop's border, as a share of the crop's side.
DEFAULT_FEATHER = 0.12
#: Photos are shrunk so that their long side is at most this for detection (speed); boxes are scaled back.
DETECT_MAX_SIDE = 1600
#: Detections overlapping a larger one by more than this (intersection over the smaller box) are dropped.
NESTED_OVERLAP = 0.5

INSTALL_HINT = 'face detection needs OpenCV: pip install "ugatit-cli[faces]"'

#: Crops in, one output per crop out: an RGB image, or a mapping with "image" and extra images ("heatmap").
BatchTranslator = Callable[[list[Image.Image]], Sequence[Image.Image | Mapping[str, Image.Image]]]


def import_cv2() -> Any:
    """OpenCV, or :class:`UserError` with the install hint when the ``faces`` extra is missing."""
    try:
        import cv2
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return cv2


@dataclass(frozen=True)
class Face:
    """One detected face: the detector's ``box`` (x, y, w, h) and the square ``crop`` (x, y, side) to
    translate, both in pixels of the (EXIF-upright) photo; the crop lies inside the photo."""

    box: tuple[int, int, int, int]
    crop: tuple[int, int, int]


class FaceDetector:
    """Frontal faces with an OpenCV Haar cascade; thread-safe (one classifier per thread).

    ``cascade`` is a file name in ``cv2.data.haarcascades`` or a path. Raises :class:`UserError` when OpenCV
    is missing or the cascade cannot be loaded.
    """

    def __init__(self, cascade: str = DEFAULT_CASCADE, *, min_neighbors: int = DEFAULT_MIN_NEIGHBORS,
                 scale_factor: float = DEFAULT_SCALE_FACTOR, max_side: int = DETECT_MAX_SIDE):
        self.cv2 = import_cv2()
        from pathlib import Path

        path = Path(cascade)
        self.path = str(path if path.is_file() else Path(self.cv2.data.haarcascades) / cascade)
        self.min_neighbors = min_neighbors
        self.scale_factor = scale_factor
        self.max_side = max_side
        self._local = threading.local()
        self._classifier()  # fail now, not on the first photo

    def _classifier(self) -> Any:
        classifier = getattr(self._local, "classifier", None)
        if classifier is None:
            classifier = self.cv2.CascadeClassifier(self.path)
            if classifier.empty():
                raise UserError(f"{self.path}: cannot load the face detector's cascade")
            self._local.classifier = classifier
        return classifier

    def detect(self, img: Image.Image, min_face: int = DEFAULT_MIN_FACE) -> list[tuple[int, int, int, int]]:
        """Face boxes (x, y, w, h) in ``img`` pixels, at least ``min_face`` px wide, sorted left to right."""
        cv2 = self.cv2
        gray = np.asarray(img.convert("L"))
        scale = min(1.0, self.max_side / max(gray.shape))
        if scale < 1.0:
            gray = cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)),
                              interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_side = max(20, int(min_face * scale))  # the cascades' window is 20 x 20
        found = self._classifier().detectMultiScale(gray, scaleFactor=self.scale_factor,
                                                    minNeighbors=self.min_neighbors, minSize=(min_side, min_side))
        boxes = [tuple(round(v / scale) for v in box) for box in np.asarray(found).reshape(-1, 4).tolist()]
        boxes = [b for b in boxes if b[2] >= min_face]
        return sorted(_drop_nested(boxes), key=lambda b: (b[0], b[1]))


def _drop_nested(boxes: list[tuple[int, ...]]) -> list[tuple[int, int, int, int]]:
    """Keep the larger of two boxes that mostly overlap (the cascade sometimes finds a face twice)."""
    kept: list[tuple[int, int, int, int]] = []
    for box in sorted(boxes, key=lambda b: -b[2] * b[3]):
        if all(_overlap_of_smaller(box, k) <= NESTED_OVERLAP for k in kept):
            kept.append(box)  # type: ignore[arg-type]
    return kept


def _overlap_of_smaller(a: Sequence[int], b: Sequence[int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / max(1, min(a[2] * a[3], b[2] * b[3]))


def square_crop(box: Sequence[float], image_size: tuple[int, int], face_scale: float = DEFAULT_FACE_SCALE
                ) -> tuple[int, int, int]:
    """The square (x, y, side) around a detector box (x, y, w, h): ``face_scale`` times its side, centred on
    the box moved up by :data:`CROP_SHIFT`, moved inside the photo of ``image_size`` (width, height), its side
    at most the photo's short side. Raises ValueError for ``face_scale`` < 1."""
    if face_scale < 1:
        raise ValueError(f"face scale must be at least 1, got {face_scale}")
    width, height = image_size
    x, y, w, h = box
    side = min(round(max(w, h) * face_scale), width, height)
    cx, cy = x + w / 2, y + h / 2 - CROP_SHIFT * h
    left = min(max(0, round(cx - side / 2)), width - side)
    top = min(max(0, round(cy - side / 2)), height - side)
    return left, top, side


def find_faces(img: Image.Image, detector: FaceDetector, *, face_scale: float = DEFAULT_FACE_SCALE,
               min_face: int = DEFAULT_MIN_FACE) -> list[Face]:
    """Every face of ``img`` at least ``min_face`` px wide, with its crop; left to right."""
    return [Face(box, square_crop(box, img.size, face_scale)) for box in detector.detect(img, min_face)]


def feather_mask(side: int, feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """(side, side) float32 blend weights: 1 inside, smoothstep down to exactly 0 at the border over
    ``feather`` of the side (0 gives a hard square)."""
    ramp = max(1, round(side * feather)) if feather > 0 else 0
    pos = np.arange(side, dtype=np.float32)
    dist = np.minimum(pos, side - 1 - pos)  # 0 on the border pixels
    t = np.clip(dist / ramp, 0.0, 1.0) if ramp else np.ones(side, np.float32)
    edge = t * t * (3 - 2 * t)
    return np.outer(edge, edge).astype(np.float32)


def paste_faces(img: Image.Image, faces: Sequence[Face], crops: Sequence[Image.Image],
                feather: float = DEFAULT_FEATHER) -> Image.Image:
    """``img`` with each translated crop resized into its face's square and blended with :func:`feather_mask`.

    Pixels outside every square (and where the mask is 0) are those of ``img``, byte for byte.
    """
    out = np.array(img.convert("RGB"), dtype=np.uint8)
    for face, crop in zip(faces, crops, strict=True):
        left, top, side = face.crop
        new = np.asarray(crop.convert("RGB").resize((side, side), Image.Resampling.LANCZOS), dtype=np.float32)
        mask = feather_mask(side, feather)[..., None]
        region = out[top:top + side, left:left + side]
        blended = np.rint(region.astype(np.float32) * (1 - mask) + new * mask).astype(np.uint8)
        region[...] = np.where(mask > 0, blended, region)
    return Image.fromarray(out, mode="RGB")


def cut_crops(img: Image.Image, faces: Sequence[Face]) -> list[Image.Image]:
    """The square crop of each face, at photo resolution."""
    return [img.crop((f.crop[0], f.crop[1], f.crop[0] + f.crop[2], f.crop[1] + f.crop[2])) for f in faces]


def as_outputs(result: Image.Image | Mapping[str, Image.Image]) -> dict[str, Image.Image]:
    """One :data:`BatchTranslator` output as a mapping with at least ``"image"``."""
    return {"image": result} if isinstance(result, Image.Image) else dict(result)


@dataclass
class FaceResult:
    """What :func:`translate_faces` made of one photo: the faces found, each translated crop's outputs
    (``"image"`` and extras such as ``"heatmap"``, at the model's size) and, in composite mode, the photo with
    the faces pasted back. No face: ``faces`` is empty and ``composite`` None."""

    faces: list[Face]
    crops: list[dict[str, Image.Image]] = field(default_factory=list)
    composite: Image.Image | None = None


def translate_faces(img: Image.Image, translate_batch: BatchTranslator, detector: FaceDetector, *,
                    face_scale: float = DEFAULT_FACE_SCALE, min_face: int = DEFAULT_MIN_FACE,
                    feather: float = DEFAULT_FEATHER, composite: bool = True,
                    faces: Sequence[Face] | None = None) -> FaceResult:
    """Detect the faces of ``img`` (unless ``faces`` are given), translate all their crops in one call of
    ``translate_batch`` and, with ``composite``, paste them back."""
    found = list(faces) if faces is not None else find_faces(img, detector, face_scale=face_scale,
                                                             min_face=min_face)
    if not found:
        return FaceResult([])
    outputs = [as_outputs(r) for r in translate_batch(cut_crops(img, found))]
    if len(outputs) != len(found):
        raise ValueError(f"the translator returned {len(outputs)} outputs for {len(found)} crops")
    pasted = paste_faces(img, found, [o["image"] for o in outputs], feather) if composite else None
    return FaceResult(found, outputs, pasted)
