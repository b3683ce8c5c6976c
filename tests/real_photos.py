"""Real photos that ship inside pip packages, and composites made from them, for the face and video tests
and benchmarks.

- scikit-image ``astronaut`` (512 x 512, Eileen Collins, one face) and matplotlib's ``grace_hopper.jpg``
  (512 x 600, one face);
- scikit-image ``lfw_subset``: 100 Labeled-Faces-in-the-Wild faces then 100 non-face patches, 25 x 25
  grey; upscaled to 64 px and framed in a 32 px replicated border (the cascade needs context around a
  tight face crop) -> 128 x 128;
- face-free scikit-image photos (coffee, a cat, a rocket, galaxies, textures, ...) for false positives.

``FACE_BOXES`` are where the faces are (x, y, w, h): the box all of OpenCV's frontal Haar cascades agree on
to within a few pixels, checked by eye.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

FACE_BOXES = {"astronaut": (177, 67, 93, 93), "grace_hopper": (150, 102, 230, 230)}
FACE_FREE = ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "brick", "grass",
             "gravel", "moon", "coins", "colorwheel", "cell")


def astronaut() -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.astronaut())


def grace_hopper() -> Image.Image:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return Image.open(io.BytesIO(f.read())).convert("RGB")


def lfw(faces: bool) -> list[Image.Image]:
    """The 100 faces (``faces=True``) or the 100 non-faces of ``lfw_subset``, as 128 x 128 RGB."""
    import skimage.data

    data = skimage.data.lfw_subset()
    part = data[:100] if faces else data[100:]
    out = []
    for patch in part:
        small = Image.fromarray(np.rint(patch * 255).astype(np.uint8), mode="L").resize((64, 64),
                                                                                           Image.Resampling.BICUBIC)
        framed = np.pad(np.asarray(small), 32, mode="edge")
        out.append(Image.fromarray(framed, mode="L").convert("RGB"))
    return out


def face_free(name: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    return Image.fromarray(arr).convert("RGB")


def head(name: str) -> Image.Image:
    """The face of ``name`` with hair and chin (twice its box, as a crop for a composite)."""
    img = astronaut() if name == "astronaut" else grace_hopper()
    x, y, w, h = FACE_BOXES[name]
    cx, cy, side = x + w / 2, y + h / 2, 2 * w
    return img.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))


def two_faces() -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """Astronaut's and Grace Hopper's heads (200 px) on the coffee photo (900 x 600); their face boxes."""
    canvas = face_free("coffee").resize((900, 600), Image.Resampling.BICUBIC)
    boxes = []
    for name, (left, top) in (("astronaut", (80, 150)), ("grace_hopper", (560, 220))):
        canvas.paste(head(name).resize((200, 200), Image.Resampling.LANCZOS), (left, top))
        boxes.append((left + 50, top + 50, 100, 100))  # the box is the middle half of its head crop
    return canvas, boxes


def small_face_in_large() -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The astronaut at 90 % (face ~84 px) in the corner of a 3000 x 2000 photo (the rocket, enlarged)."""
    canvas = face_free("rocket").resize((3000, 2000), Image.Resampling.BICUBIC)
    small = astronaut().resize((460, 460), Image.Resampling.LANCZOS)
    left, top = 2300, 1400
    canvas.paste(small, (left, top))
    x, y, w, h = FACE_BOXES["astronaut"]
    s = 460 / 512
    return canvas, (round(left + x * s), round(top + y * s), round(w * s), round(h * s))


def exif_rotated_jpeg(img: Image.Image) -> bytes:
    """``img`` stored rotated 90 degrees with EXIF orientation 6, so that upright viewers show ``img``."""
    stored = img.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise; orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


def iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)
