"""Face detection, crops and paste-back on real photos that ship in pip packages (tests/real_photos.py)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("cv2")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")

import real_photos as rp  # noqa: E402

from ugatit_cli.core import faces  # noqa: E402
from ugatit_cli.core.images import open_rgb  # noqa: E402
from ugatit_cli.errors import UserError  # noqa: E402
from ugatit_cli.families import get_family  # noqa: E402
from ugatit_cli.families.base import Model  # noqa: E402
from ugatit_cli.families.ugatit import Generator, UGATITConfig  # noqa: E402
from ugatit_cli.media import translator_batches  # noqa: E402


@pytest.fixture(scope="module")
def detector():
    return faces.FaceDetector()


@pytest.fixture(scope="module")
def translate():
    torch.manual_seed(0)
    generator = Generator(UGATITConfig(img_size=32, ch=4, n_res=1, light=True)).eval()
    translator = get_family("ugatit").translator(Model("ugatit", generator.config, {"a2b": generator}), "a2b",
                                                 32, {"heatmap": True})
    return translator_batches(translator)(Path("photo.png"))  # the U-GAT-IT family's own translator


def _found(detected, box) -> bool:
    return any(rp.iou(d, box) >= 0.5 for d in detected)


@pytest.mark.parametrize("name, photo", [("astronaut", rp.astronaut), ("grace_hopper", rp.grace_hopper)])
def test_the_face_of_each_real_photo_is_found_once(detector, name, photo):
    found = detector.detect(photo())
    assert len(found) == 1 and _found(found, rp.FACE_BOXES[name])


def test_lfw_faces_are_found_and_non_faces_are_not(detector):
    # measured (benchmarks/faces.py): 98/100 faces, 0/100 non-faces; the bounds leave a little room
    assert sum(bool(detector.detect(img, 20)) for img in rp.lfw(True)) >= 95
    assert sum(bool(detector.detect(img, 20)) for img in rp.lfw(False)) <= 2


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket"])
def test_photos_without_people_have_no_face(detector, name):
    assert detector.detect(rp.face_free(name)) == []


def test_two_faces_on_one_photo_are_found_left_to_right(detector):
    img, boxes = rp.two_faces()
    found = detector.detect(img)
    assert len(found) == 2
    assert _found(found[:1], boxes[0]) and _found(found[1:], boxes[1])


def test_a_face_rotated_by_exif_is_found_upright(detector, tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(rp.exif_rotated_jpeg(rp.grace_hopper()))
    with Image.open(path) as raw:
        assert raw.size == (600, 512)  # stored on its side
    img = open_rgb(path)
    assert img.size == (512, 600)
    found = detector.detect(img)
    assert len(found) == 1 and _found(found, rp.FACE_BOXES["grace_hopper"])


def test_a_small_face_in_a_large_photo_is_found_and_min_face_ignores_it(detector):
    img, box = rp.small_face_in_large()
    assert _found(detector.detect(img), box)
    assert detector.detect(img, min_face=200) == []


def test_square_crop_frames_hair_and_chin_and_stays_inside_the_photo():
    left, top, side = faces.square_crop((100, 100, 50, 50), (400, 300), 2.0)
    assert side == 100 and left == 75 and top == 70  # centred, moved up by 0.1 of the box
    assert faces.square_crop((0, 0, 50, 50), (400, 300), 2.0) == (0, 0, 100)  # pushed back inside
    assert faces.square_crop((350, 250, 50, 50), (400, 300), 2.0) == (300, 200, 100)
    assert faces.square_crop((100, 100, 200, 200), (400, 300), 3.0) == (50, 0, 300)  # at most the short side
    with pytest.raises(ValueError):
        faces.square_crop((0, 0, 10, 10), (100, 100), 0.5)


def test_feather_mask_is_zero_on_the_border_and_one_inside():
    mask = faces.feather_mask(100, 0.12)
    assert mask[0].max() == 0 and mask[:, -1].max() == 0
    assert (mask[12:88, 12:88] == 1).all()
    assert np.all(np.diff(mask[50, :13]) >= 0)
    assert (faces.feather_mask(10, 0)[1:-1, 1:-1] == 1).all()


def test_paste_back_leaves_every_pixel_outside_the_feathered_squares_untouched():
    img, _ = rp.two_faces()
    found = [faces.Face((0, 0, 1, 1), (100, 150, 200)), faces.Face((0, 0, 1, 1), (560, 220, 120))]
    red = [Image.new("RGB", (32, 32), (255, 0, 0))] * 2
    out = np.asarray(faces.paste_faces(img, found, red))
    src = np.asarray(img)
    changed = np.any(out != src, axis=-1)
    inside = np.zeros_like(changed)
    for f in found:
        x, y, s = f.crop
        mask = faces.feather_mask(s) > 0
        inside[y:y + s, x:x + s] |= mask
        assert (out[y + s // 2, x + s // 2] == (255, 0, 0)).all()  # the middle is the translation
    assert not changed[~inside].any()
    assert changed[inside].mean() > 0.9


def test_translate_faces_runs_all_crops_in_one_batch_and_pastes_them_back(detector, translate):
    img, _ = rp.two_faces()
    calls = []

    def counting(crops):
        calls.append([c.size for c in crops])
        return translate(crops)

    result = faces.translate_faces(img, counting, detector)
    assert len(calls) == 1 and len(calls[0]) == 2
    assert [c[0] == c[1] for c in calls[0]] == [True, True]  # square crops
    assert result.composite.size == img.size
    assert [sorted(o) for o in result.crops] == [["heatmap", "image"]] * 2
    assert result.crops[0]["image"].size == (32, 32)
    before, after = np.asarray(img), np.asarray(result.composite)
    for face in result.faces:
        x, y, s = face.crop
        assert np.abs(after[y + s // 2 - 5:y + s // 2 + 5, x + s // 2 - 5:x + s // 2 + 5].astype(int)
                      - before[y + s // 2 - 5:y + s // 2 + 5, x + s // 2 - 5:x + s // 2 + 5]).mean() > 1
    far = after[:100, 350:500]  # no face there: untouched
    assert (far == before[:100, 350:500]).all()


def test_crops_mode_and_a_photo_without_faces(detector, translate):
    result = faces.translate_faces(rp.astronaut(), translate, detector, composite=False)
    assert result.composite is None and len(result.crops) == 1
    nothing = faces.translate_faces(rp.face_free("rocket"), translate, detector)
    assert nothing.faces == [] and nothing.composite is None


def test_without_opencv_the_hint_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(UserError, match=r'pip install "ugatit-cli\[faces\]"'):
        faces.FaceDetector()
