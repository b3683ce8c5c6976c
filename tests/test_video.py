"""Video translation with PyAV on clips the tests make from real photos (tests/clips.py), through a real tiny
U-GAT-IT generator."""

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

av = pytest.importorskip("av")
pytest.importorskip("skimage")

import clips  # noqa: E402
import real_photos as rp  # noqa: E402

from ugatit_cli.core.files import OUTPUT_MARK  # noqa: E402
from ugatit_cli.core.video import BadVideoError, translate_video  # noqa: E402
from ugatit_cli.errors import UserError  # noqa: E402
from ugatit_cli.families import get_family  # noqa: E402
from ugatit_cli.families.base import Model  # noqa: E402
from ugatit_cli.families.ugatit import Generator, UGATITConfig  # noqa: E402
from ugatit_cli.media import translator_batches  # noqa: E402

SIZE = (96, 64)


@pytest.fixture(scope="module")
def translate():
    torch.manual_seed(0)
    generator = Generator(UGATITConfig(img_size=32, ch=4, n_res=1, light=True)).eval()
    translator = get_family("ugatit").translator(Model("ugatit", generator.config, {"a2b": generator}), "a2b",
                                                 32, {"heatmap": False})
    return translator_batches(translator)(Path("photo.png"))  # the U-GAT-IT family's own translator


@pytest.fixture(scope="module")
def pan_frames():
    return clips.pan(rp.astronaut(), 8, SIZE)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != OUTPUT_MARK)


def test_a_pan_keeps_rate_duration_size_and_audio(tmp_path, translate, pan_frames):
    src = clips.write_clip(tmp_path / "pan.mp4", pan_frames)
    calls = []

    def counting(images):
        calls.append(len(images))
        return translate(images)

    progress = []
    result = translate_video(src, tmp_path / "out.mp4", counting, batch_size=3,
                             on_frame=lambda done, total: progress.append((done, total)))
    before, after = clips.read_clip(src), clips.read_clip(tmp_path / "out.mp4")
    assert calls == [3, 3, 2] and progress[-1] == (8, 8)
    assert result.frames == 8 and result.audio == "copied" and (result.width, result.height) == SIZE
    assert after["times"] == before["times"] and after["rate"] == before["rate"] == 10
    assert after["duration"] == pytest.approx(before["duration"], abs=0.03)
    assert after["codec"] == "h264" and after["pix_fmt"] == "yuv420p"
    assert after["frames"][0].shape == (64, 96, 3)
    assert after["audio_codec"] == "aac" and np.array_equal(after["audio"], before["audio"])  # packets copied
    # the frames are the model's translations, scaled back: compare with translating the decoded frame
    expected = np.asarray(translate([Image.fromarray(before["frames"][0])])[0]["image"].resize(SIZE, Image.BICUBIC))
    assert np.abs(after["frames"][0].astype(int) - expected).mean() < 6
    assert np.abs(after["frames"][0].astype(int) - before["frames"][0]).mean() > 20
    assert _leftovers(tmp_path) == []


def test_a_zoom_at_the_model_size_and_an_odd_size_clip(tmp_path, translate):
    zoom = clips.zoom(rp.grace_hopper(), 5, (50, 38))  # x264 needs even sizes: the output is 50 x 38
    src = clips.write_clip(tmp_path / "zoom.mkv", zoom, fmt="matroska", fps=12)
    translate_video(src, tmp_path / "zoom.mp4", translate, keep_size=False)
    square, before = clips.read_clip(tmp_path / "zoom.mp4"), clips.read_clip(src)
    assert square["frames"][0].shape == (32, 32, 3) and len(square["frames"]) == 5
    assert square["times"] == pytest.approx(before["times"], abs=1e-3)  # Matroska counts in milliseconds
    assert float(square["rate"]) == pytest.approx(12, rel=0.01)

    odd = [img.resize((51, 37)) for img in zoom]
    src = clips.write_clip(tmp_path / "odd.mkv", odd, fmt="matroska", codec="mpeg4", pix_fmt="yuv420p")
    result = translate_video(src, tmp_path / "odd.mp4", translate)
    assert (result.width, result.height) == (50, 36)


def test_variable_frame_rate_keeps_every_timestamp(tmp_path, translate, pan_frames):
    pts = [0, 1, 3, 4, 8, 9, 15, 16]
    src = clips.write_clip(tmp_path / "vfr.mp4", pan_frames, pts=pts, time_base=Fraction(1, 20))
    translate_video(src, tmp_path / "out.mp4", translate)
    assert clips.read_clip(tmp_path / "out.mp4")["times"] == pytest.approx([p / 20 for p in pts])


def test_a_phone_clip_with_rotation_metadata_comes_out_upright(tmp_path, translate, pan_frames):
    stored = [img.transpose(Image.Transpose.ROTATE_270) for img in pan_frames]  # on its side, as phones store it
    src = clips.write_clip(tmp_path / "phone.mp4", stored, rotation=90)
    assert clips.read_clip(src)["frames"][0].shape == (96, 64, 3)
    translate_video(src, tmp_path / "out.mp4", translate)
    out = clips.read_clip(tmp_path / "out.mp4")
    assert out["frames"][0].shape == (64, 96, 3) and out["rotations"][0] == 0
    # upright: the translation of the upright frame, not of the stored one
    upright = np.asarray(translate([pan_frames[0]])[0]["image"].resize(SIZE, Image.BICUBIC)).astype(int)
    assert np.abs(out["frames"][0] - upright).mean() < 6


def test_audio_mp4_cannot_hold_is_reencoded_to_aac(tmp_path, translate, pan_frames):
    src = clips.write_clip(tmp_path / "pcm.mkv", pan_frames, fmt="matroska", audio_codec="pcm_s16le")
    result = translate_video(src, tmp_path / "out.mp4", translate)
    out = clips.read_clip(tmp_path / "out.mp4")
    assert result.audio == "re-encoded to AAC" and out["audio_codec"] == "aac"
    spectrum = np.abs(np.fft.rfft(out["audio"]))
    assert np.argmax(spectrum) * out["audio_rate"] / len(out["audio"]) == pytest.approx(clips.TONE_HZ, abs=5)


def test_faces_per_frame_are_pasted_back_and_the_rest_is_kept(tmp_path, translate):
    faces = pytest.importorskip("ugatit_cli.core.faces")
    pytest.importorskip("cv2")
    from ugatit_cli.core.video import FaceSettings

    frames = clips.pan(rp.astronaut(), 4, (320, 448), step=3)
    src = clips.write_clip(tmp_path / "face.mp4", frames, audio=False)
    result = translate_video(src, tmp_path / "out.mp4", translate, faces=FaceSettings(faces.FaceDetector()))
    assert result.faces == 4 and result.audio is None
    before, after = clips.read_clip(src), clips.read_clip(tmp_path / "out.mp4")
    diff = np.abs(after["frames"][0].astype(int) - before["frames"][0]).mean(axis=-1)
    x, y, w, h = rp.FACE_BOXES["astronaut"]
    top = (512 - 448) // 2
    assert diff[y - top + h // 2, x + w // 2] > 20  # the face is translated
    assert diff[350:, :60].mean() < 3  # far from it only the encoder's loss


def _bad_files(tmp_path, pan_frames):
    good = clips.write_clip(tmp_path / "good.mp4", pan_frames).read_bytes()
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "cut.mp4").write_bytes(good[: len(good) // 2])
    mkv = clips.write_clip(tmp_path / "good.mkv", pan_frames, fmt="matroska", audio=False).read_bytes()
    (tmp_path / "cut.mkv").write_bytes(mkv[: len(mkv) * 9 // 10])
    (tmp_path / "text.mp4").write_text("not a video\n" * 50)
    with av.open(str(tmp_path / "tone.m4a"), "w") as out:
        sound = out.add_stream("aac", rate=44100)
        sound.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4410), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, 0
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    with av.open(str(tmp_path / "noframes.mkv"), "w") as out:  # a video stream, but only sound in it
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        sound = out.add_stream("aac", rate=44100)
        sound.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4410), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, 0
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
        out.mux(video.encode(None))
    mpeg4 = clips.write_clip(tmp_path / "m4.mkv", pan_frames, fmt="matroska", codec="mpeg4", audio=False)
    # the same bytes with a codec id FFmpeg does not know (same length, so the file stays valid)
    (tmp_path / "alien.mkv").write_bytes(mpeg4.read_bytes().replace(b"V_MPEG4/ISO/ASP", b"V_NOSUCH/CODEC1"))


@pytest.mark.parametrize("name, reason", [
    ("zero.mp4", "empty file (0 bytes)"),
    ("cut.mp4", "truncated, corrupt or not a video file"),
    ("cut.mkv", "truncated: "),
    ("text.mp4", "truncated, corrupt or not a video file"),
    ("tone.m4a", "no video stream (audio only)"),
    ("noframes.mkv", "no video frames"),
    ("alien.mkv", "unsupported video codec"),
    ("missing.mp4", "no such file"),
])
def test_bad_videos_are_named_with_their_reason_and_leave_nothing(tmp_path, translate, pan_frames, name, reason):
    _bad_files(tmp_path, pan_frames)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BadVideoError) as caught:
        translate_video(tmp_path / name, out / "clip.mp4", translate)
    assert str(caught.value).startswith(f"{tmp_path / name}: {reason}") and "\n" not in str(caught.value)
    assert list(out.iterdir()) == []


def test_bad_options_are_usage_errors(tmp_path, translate, pan_frames):
    src = clips.write_clip(tmp_path / "pan.mp4", pan_frames[:2], audio=False)
    for kwargs, message in (({"codec": "nosuch"}, "unknown video codec"), ({"crf": 60}, "crf must be"),
                            ({"batch_size": 0}, "batch size"), ({"blend": 1.0}, "blend")):
        with pytest.raises(UserError, match=message):
            translate_video(src, tmp_path / "out.mp4", translate, **kwargs)
    result = translate_video(src, tmp_path / "out.mp4", translate, codec="mpeg4")
    assert clips.read_clip(tmp_path / "out.mp4")["codec"] == "mpeg4" and result.frames == 2
