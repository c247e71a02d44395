"""Video I/O on real files made with PyAV: probing, frame plans, colour, resizing, writing."""

from __future__ import annotations

import pytest
import torch

from wanvae.io import video
from wanvae.io.video import MediaError
import media


def test_probe_counts_frames_without_decoding(tmp_path):
    info = video.probe(media.write_video(tmp_path / "a.mp4", 9, 64, 48))
    assert (info.width, info.height, info.frames, info.fps) == (64, 48, 9, 16.0)
    assert info.duration == pytest.approx(9 / 16)
    gif = video.probe(media.write_video(tmp_path / "a.gif", 5, 40, 24, codec="gif", fps=10))
    assert (gif.frames, gif.fps) == (5, 10.0)
    for name in ("a.png", "a.jpg", "a.webp"):
        img = video.probe(media.write_image(tmp_path / name, 40, 24))
        assert (img.frames, img.is_image, img.width, img.height) == (1, True, 40, 24)


def test_variable_frame_rate_is_resampled_to_the_nearest_frame(tmp_path):
    # Frames at 0, 0.1, 0.15, 0.4, 0.5, 0.9 s.
    info = video.probe(media.write_video(tmp_path / "vfr.mkv", 6, 64, 48, pts=[0, 100, 150, 400, 500, 900]))
    plan = video.plan_frames(info, fps=10, frames=9)
    # Wanted 0.0 0.1 0.2 ... 0.8 s -> nearest source frames.
    assert plan.indices == (0, 1, 2, 3, 3, 4, 4, 4, 5)
    assert plan.fps == 10
    assert video.plan_frames(info, start=0.4, frames=1).indices == (3,)
    assert video.plan_frames(info, start=0.4, frame_policy="trim").indices == (3,)


def test_frame_plan_errors_and_policies(tmp_path):
    info = video.probe(media.write_video(tmp_path / "a.mp4", 10, 64, 48))
    with pytest.raises(MediaError, match=r"a.mp4: got 10 frames, .*use 9 or 13.*--frame-policy trim\|pad"):
        video.plan_frames(info)
    assert video.plan_frames(info, frame_policy="trim").indices == tuple(range(9))
    pad = video.plan_frames(info, frame_policy="pad")
    assert pad.indices == (*range(10), 9, 9, 9) and pad.padded == 3
    with pytest.raises(MediaError, match="asked for 13 frames but only 10 are there"):
        video.plan_frames(info, frames=13)
    with pytest.raises(MediaError, match=r"--start 2s is past the end"):
        video.plan_frames(info, start=2)
    assert video.plan_frames(info, frames=5).indices == (0, 1, 2, 3, 4)
    assert video.plan_frames(info, fps=8).indices == (0, 2, 4, 6, 8)  # 16 fps -> 8 fps


def test_target_sizes():
    assert video.target_size(1000, 562) == (992, 560)  # source cropped to multiples of 16
    assert video.target_size(1280, 720, size=(832, 480)) == (832, 480)
    assert video.target_size(1280, 720, max_area=832 * 480) == (832, 464)  # Wan's rule
    with pytest.raises(MediaError, match="multiples of 8"):
        video.target_size(1280, 720, size=(830, 480))
    with pytest.raises(MediaError, match="--size or --max-area, not both"):
        video.target_size(1280, 720, size=(832, 480), max_area=1000)


def test_resize_modes_keep_content_where_it_belongs():
    frame = torch.zeros(3, 40, 80)
    frame[:, :, :40] = 1.0  # left half white
    crop = video.resize(frame, (40, 40), "crop")  # cover to 80x40, centre crop -> half white
    assert crop.shape == (3, 40, 40)
    assert crop[:, :, :15].mean() > 0.95 and crop[:, :, 25:].mean() < 0.05
    pad = video.resize(frame, (40, 40), "pad")  # fit to 40x20, black bars above and below
    assert pad.shape == (3, 40, 40) and pad[:, :8].max() == -1 and pad[:, -8:].max() == -1
    stretch = video.resize(frame, (40, 40), "stretch")
    assert stretch.shape == (3, 40, 40) and stretch[:, :, :18].mean() > 0.95
    with pytest.raises(MediaError, match="--resize must be one of"):
        video.resize(frame, (40, 40), "fill")


@pytest.mark.parametrize(("colorspace", "color_range"), [("ITU709", "MPEG"), ("ITU601", "MPEG"), ("ITU709", "JPEG")])
def test_colour_matrix_and_range_come_from_the_stream(tmp_path, colorspace, color_range, monkeypatch):
    red = (220, 30, 40)
    path = media.write_video(tmp_path / "c.mp4", 1, 32, 32, solid=red, colorspace=colorspace, color_range=color_range)
    info = video.probe(path)
    rgb = next(video.read_frames(info, video.plan_frames(info), (32, 32)))[:, 16, 16].add(1).mul(127.5)
    assert (rgb - torch.tensor(red, dtype=torch.float32)).abs().max() <= 3, rgb
    if colorspace == "ITU709":  # the check can fail: reading BT.709 as BT.601 shifts the colour
        monkeypatch.setattr(video, "_COLORSPACES", {})
        wrong = next(video.read_frames(info, video.plan_frames(info), (32, 32)))[:, 16, 16].add(1).mul(127.5)
        assert (wrong - torch.tensor(red, dtype=torch.float32)).abs().max() > 8


def test_frames_are_decoded_in_plan_order_with_repeats(tmp_path):
    info = video.probe(media.write_video(tmp_path / "a.mp4", 5, 64, 48, codec="libx264"))
    frames = list(video.read_frames(info, video.FramePlan((0, 1, 1, 3, 4), 0.0, 16.0), (64, 48)))
    assert len(frames) == 5 and torch.equal(frames[1], frames[2]) and not torch.equal(frames[0], frames[1])
    # Lossy H.264 of the pattern stays close to it.
    ref = torch.from_numpy(media.pattern(3, 64, 48)).permute(2, 0, 1).float() / 127.5 - 1
    assert (frames[3] - ref).abs().mean() < 0.06


def test_bad_files_are_named_in_one_line(tmp_path):
    with pytest.raises(MediaError, match="nope.mp4: no such file"):
        video.probe(tmp_path / "nope.mp4")
    (tmp_path / "notes.mp4").write_text("this is not a video\n")
    with pytest.raises(MediaError, match="notes.mp4: not a readable video or image"):
        video.probe(tmp_path / "notes.mp4")
    with pytest.raises(MediaError, match="a.wav: has no video stream \\(streams: audio\\)"):
        video.probe(media.write_audio_only(tmp_path / "a.wav"))


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_truncated_video_is_an_error_not_a_short_clip(tmp_path, suffix):
    path = media.write_video(tmp_path / f"full{suffix}", 33, 64, 48)
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(MediaError, match=f"cut{suffix}: .*truncated"):
        video.probe(cut)


def test_writer_is_atomic_and_readable(tmp_path):
    out = tmp_path / "out.mp4"
    with video.VideoWriter(out, 16) as w:
        for i in range(5):
            w.write(torch.from_numpy(media.pattern(i, 64, 48)).permute(2, 0, 1).float() / 127.5 - 1)
    info = video.probe(out)
    assert (info.frames, info.width, info.height, info.fps) == (5, 64, 48, 16.0)
    with pytest.raises(RuntimeError):
        with video.VideoWriter(tmp_path / "broken.mp4", 16) as w:
            w.write(torch.zeros(3, 48, 64))
            raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # nothing partial left
    with pytest.raises(FileExistsError):
        video.VideoWriter(out, 16)
