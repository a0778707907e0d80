"""Frame sources: video files (incl. raw .264), image folders, HTTP streams, and bad input."""

from __future__ import annotations

import functools
import http.server
import struct
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import SourceConfig
from pipeline.video.sources import (FrameRange, ImageFolderSource, StreamSource, VideoFileSource, default_camera_name,
                                    mot_sequence_dir, open_source, source_warnings_muted)
from reid.errors import CrosscamError


def numbered_frame(i: int, size=(96, 64)) -> np.ndarray:
    """A textured frame whose mean grey level encodes ``i`` (survives lossy coding well enough)."""
    noise = np.random.default_rng(i).integers(-20, 21, (size[1], size[0], 3))
    return (20 + 8 * i % 200 + noise).astype(np.uint8)


def write_mjpg_avi(path: Path, count: int, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (96, 64))
    for i in range(count):
        writer.write(numbered_frame(i))
    writer.release()
    return path


def corrupt_jpeg_frames(path: Path, frames: list[int]) -> None:
    """Overwrite the entropy-coded data of the given frames of an MJPG AVI with zeros."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    for k in frames:
        data[starts[k] + 2 : starts[k] + 400] = bytes(398)
    path.write_bytes(bytes(data))


def test_video_file_frames_indices_and_times(tmp_path: Path):
    video = write_mjpg_avi(tmp_path / "cam.avi", 12, fps=10.0)
    with open_source(str(video), None, SourceConfig()) as src:
        frames = list(src)
    assert src.camera == "cam" and src.uri == str(video.resolve())
    assert src.fps == pytest.approx(10.0) and src.frame_size == (96, 64)
    assert [f.index for f in frames] == list(range(12))
    assert [f.time_s for f in frames] == pytest.approx([i / 10.0 for i in range(12)])
    assert abs(float(frames[5].image.mean()) - 60) < 3
    assert src.frames_read == 12 and src.frames_failed == 0


def test_stride_and_max_frames(tmp_path: Path):
    video = write_mjpg_avi(tmp_path / "cam.avi", 20)
    with open_source(str(video), "front", SourceConfig(stride=3, max_frames=10)) as src:
        frames = list(src)
        assert src.frames_expected == 4
    assert [f.index for f in frames] == [0, 3, 6, 9]
    assert all(f.camera == "front" for f in frames)
    assert abs(float(frames[2].image.mean()) - 68) < 3  # frame 6 really is the 7th frame


def test_undecodable_frames_are_skipped_and_counted(tmp_path: Path, caplog):
    video = write_mjpg_avi(tmp_path / "broken.avi", 30)
    corrupt_jpeg_frames(video, [10, 11, 20])
    with open_source(str(video), None, SourceConfig()) as src:
        indices = [f.index for f in src]
    assert indices == [i for i in range(30) if i not in (10, 11, 20)]
    assert src.frames_failed == 3
    assert "frame 10 skipped" in caplog.text


def test_a_file_given_up_counts_the_frames_it_would_have_kept(tmp_path: Path, caplog):
    """Failures counted source frames to the file's end, while frames_read counts kept frames:
    with --stride 3 and --max-frames 50, a file broken from frame 21 of 60 said 39 failed."""
    video = write_mjpg_avi(tmp_path / "broken.avi", 60)
    corrupt_jpeg_frames(video, list(range(21, 60)))
    with open_source(str(video), None, SourceConfig(stride=3, max_frames=50, max_decode_failures=5)) as src:
        indices = [f.index for f in src]
    assert indices == list(range(0, 21, 3)) and src.frames_failed == len(range(21, 50, 3))  # 21, 24 ... 48
    assert "frames 21.. of 60 could not be decoded; the rest of the file was skipped" in caplog.text
    caplog.clear()
    with open_source(str(video), None, SourceConfig(stride=3, max_frames=30)) as src:  # ends among the failures
        assert [f.index for f in src] == indices and src.frames_failed == 3  # 21, 24, 27
    assert "frames 21..29 could not be decoded" in caplog.text


def mp4_to_annexb(mp4: Path, out: Path, samples: int) -> Path:
    """Write the first ``samples`` H.264 access units of a single-track MP4 as a raw Annex-B
    ``.264`` stream (SPS/PPS first, 4-byte start codes), the way cameras dump them."""
    data = mp4.read_bytes()

    def child(start: int, end: int, name: bytes) -> tuple[int, int]:
        i = start
        while i < end:
            size, kind = struct.unpack(">I4s", data[i : i + 8])
            if kind == name:
                return i + 8, i + size
            i += size
        raise ValueError(name)

    moov = child(0, len(data), b"moov")
    stbl = child(*child(*child(*child(*moov, b"trak"), b"mdia"), b"minf"), b"stbl")
    stsd = data[slice(*child(*stbl, b"stsd"))]
    avcc = stsd[stsd.index(b"avcC") + 4 :]
    length_size = (avcc[4] & 3) + 1
    start_code = b"\x00\x00\x00\x01"
    params, pos = [], 6
    for count_pos in (5, None):
        count = avcc[5] & 31 if count_pos else avcc[pos]
        pos += 0 if count_pos else 1
        for _ in range(count):
            n = struct.unpack(">H", avcc[pos : pos + 2])[0]
            params.append(avcc[pos + 2 : pos + 2 + n])
            pos += 2 + n
    stsz = data[slice(*child(*stbl, b"stsz"))]
    sizes = struct.unpack(f">{samples}I", stsz[12 : 12 + 4 * samples])
    offset = struct.unpack(">I", data[slice(*child(*stbl, b"stco"))][8:12])[0]  # one chunk: samples are contiguous
    stream = bytearray(b"".join(start_code + p for p in params))
    for size in sizes:
        sample, i = data[offset : offset + size], 0
        while i < size:
            n = int.from_bytes(sample[i : i + length_size], "big")
            stream += start_code + sample[i + length_size : i + length_size + n]
            i += length_size + n
        offset += size
    out.write_bytes(bytes(stream))
    return out


def test_raw_h264_elementary_stream(tmp_path: Path, hall_clip: Path, caplog, monkeypatch):
    raw = mp4_to_annexb(hall_clip, tmp_path / "hall.264", samples=30)
    with open_source(str(raw), None, SourceConfig()) as src:
        frames = list(src)
    assert src.frame_size == (768, 432) and src.frames_failed == 0
    assert len(frames) == 30
    cap = cv2.VideoCapture(str(hall_clip))
    reference = [cap.read()[1] for _ in range(30)]
    cap.release()
    assert all(np.array_equal(f.image, ref) for f, ref in zip(frames, reference))
    times = [f.time_s for f in frames]
    assert times == sorted(times) and len(set(times)) == 30  # no container clock: index / fps
    # OpenCV says 25 fps for any raw stream: the rate is its headers' (the clip's 10), else source.default_fps's, said
    assert src.fps == 10.0 and times[29] == pytest.approx(2.9) and not caplog.records
    monkeypatch.setattr("pipeline.video.sources.stream_header_rate", lambda path: None)  # a stream without timing
    with open_source(str(raw), None, SourceConfig(default_fps=12.0)) as src:
        assert src.fps == 12.0 and [f.time_s for f in src][24] == pytest.approx(2.0)
    assert sum("without timing in its headers carries no frame rate; timed at 12 fps" in r.getMessage()
               for r in caplog.records) == 1


def write_mot_sequence(root: Path, count: int, fps: int = 30) -> Path:
    seq = root / "MOT-TEST"
    (seq / "img1").mkdir(parents=True)
    for i in range(count):
        cv2.imwrite(str(seq / "img1" / f"{i + 1:06d}.jpg"), numbered_frame(i))
    (seq / "seqinfo.ini").write_text(f"[Sequence]\nname=MOT-TEST\nimDir=img1\nframeRate={fps}\nseqLength={count}\n")
    return seq


def test_mot_image_folder_uses_seqinfo_frame_rate(tmp_path: Path):
    seq = write_mot_sequence(tmp_path, 6, fps=30)
    (seq / "img1" / "000004.jpg").write_bytes(b"not a jpeg")
    for spec in (seq, seq / "img1"):
        with open_source(str(spec), None, SourceConfig()) as src:
            frames = list(src)
        assert isinstance(src, ImageFolderSource) and src.camera == "MOT-TEST"
        assert src.fps == 30.0 and src.sequence_dir == seq
        assert [f.index for f in frames] == [0, 1, 2, 4, 5] and src.frames_failed == 1
        assert frames[-1].time_s == pytest.approx(5 / 30)


def test_replay_finds_det_txt_of_a_mot_sequence_given_as_folder_or_as_video(tmp_path: Path):
    """MOTChallenge ships det/det.txt beside img1/, and some sequences (PETS09-S2L1 here) as SEQ/SEQ.mp4."""
    sequence = write_mot_sequence(tmp_path, 3)
    video = write_mjpg_avi(sequence / "MOT-TEST.avi", 3)
    with open_source(str(sequence / "img1"), "a", SourceConfig()) as folder, open_source(str(video), "b", SourceConfig()) as film:
        assert mot_sequence_dir(folder) == sequence.resolve() and mot_sequence_dir(film) is None  # no det.txt yet
        (sequence / "det").mkdir()
        (sequence / "det" / "det.txt").write_text("1,-1,1,1,5,5,0.9,-1,-1,-1\n")
        assert mot_sequence_dir(film) == sequence.resolve()


def test_image_folder_without_seqinfo_uses_default_fps(tmp_path: Path, caplog):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), numbered_frame(i))
    with open_source(str(tmp_path), "door", SourceConfig(default_fps=5.0)) as src:
        assert [f.time_s for f in src] == pytest.approx([0.0, 0.2, 0.4])
    said = [r.getMessage() for r in caplog.records if "timed at" in r.getMessage()]
    assert len(said) == 1 and "no seqinfo.ini; timed at 5 fps" in said[0]  # the assumption is said, once
    caplog.clear()
    with open_source(str(tmp_path), "door", SourceConfig(), FrameRange(1, 3)):  # a segment: said already
        pass
    with source_warnings_muted(), open_source(str(tmp_path), "door", SourceConfig()):  # read again to draw
        pass
    assert not caplog.records


def test_an_image_folder_gives_every_frame_at_the_first_frames_size(tmp_path: Path, caplog):
    """Images of another size went through as they were: boxes in tracks.txt outside the run's frame size."""
    seq = write_mot_sequence(tmp_path, 5)
    cv2.imwrite(str(seq / "img1" / "000003.jpg"), cv2.resize(numbered_frame(2), None, fx=2, fy=2))
    cv2.imwrite(str(seq / "img1" / "000004.jpg"), cv2.resize(numbered_frame(3), None, fx=0.5, fy=0.5))
    data = (seq / "img1" / "000005.jpg").read_bytes()
    (seq / "img1" / "000005.jpg").write_bytes(data[: len(data) // 2])  # cut off: decoded partly
    with open_source(str(seq), None, SourceConfig()) as src:
        frames = list(src)
    assert [f.image.shape for f in frames] == [frames[0].image.shape] * 5 and src.frames_read == 5
    assert np.abs(frames[2].image.astype(int) - numbered_frame(2).astype(int)).mean() < 8  # resized back, not cropped
    said = [r.getMessage() for r in caplog.records]
    assert sum("not %dx%d as the folder's first image" % src.frame_size in m for m in said) == 1, said
    assert sum("000005.jpg is cut off" in m for m in said) == 1, said
    # the serve page's frames are the tracked ones: a box drawn on a resized frame crops what was tracked
    from pipeline.serve.frames import FolderFrames

    served = FolderFrames(seq, 30.0)
    assert all(np.array_equal(served.image(f.index), f.image) for f in frames)


@pytest.mark.parametrize("numbers, said", [
    ([1, 2, 3, 4], None),
    ([1, 2, 5, 6], "numbered 1-6 with 2 missing"),
    ([11, 12, 13, 14], "numbered 11-14, but crosscam numbers frames by their order"),
])
def test_an_image_folder_numbered_otherwise_than_its_order_is_said_once(tmp_path: Path, caplog, numbers, said):
    """MOTChallenge names frames by number; a gap or another first number shifts tracks.txt's
    frames (1..N by order) against a ground truth numbered by file name."""
    for i, n in enumerate(numbers):
        cv2.imwrite(str(tmp_path / f"{n:06d}.jpg"), numbered_frame(i))
    with open_source(str(tmp_path), "seq", SourceConfig(default_fps=5.0)) as src:
        assert [f.index for f in src] == [0, 1, 2, 3]  # by order, as the warning says
    warned = [r.getMessage() for r in caplog.records if "by file name" in r.getMessage()]
    assert (warned == []) if said is None else (len(warned) == 1 and said in warned[0])


@pytest.mark.parametrize("name", ["{n}.jpg", "frame_{n}.png"])
def test_frames_numbered_without_zeros_are_read_in_counting_order(tmp_path: Path, caplog, name):
    """1.jpg ... 12.jpg were read 1, 10, 11, 12, 2, 3...: a scrambled video (and a warning of numbers missing)."""
    for n in range(1, 13):
        cv2.imwrite(str(tmp_path / name.format(n=n)), numbered_frame(n))
    with open_source(str(tmp_path), "seq", SourceConfig(default_fps=5.0)) as src:
        frames = list(src)
    assert [round((f.image.mean() - 20) / 8) for f in frames] == list(range(1, 13))  # numbered_frame's grey level
    assert not [r for r in caplog.records if "by file name" in r.getMessage()]


def make_bad_input(folder: Path, kind: str) -> Path:
    path = folder / {"missing": "missing.mp4", "empty": "empty.mp4", "text": "notes.mp4", "no-images": "frames"}[kind]
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, not a video\n" * 50)
    elif kind == "no-images":
        path.mkdir()
        (path / "readme.txt").write_text("no frames here")
    return path


@pytest.mark.parametrize(
    "kind, message",
    [("missing", "no such file or folder"), ("empty", "file is empty"), ("text", "not a readable video"),
     ("no-images", "no images")],
)
def test_bad_inputs_are_one_line_errors(tmp_path: Path, kind: str, message: str):
    path = make_bad_input(tmp_path, kind)
    with pytest.raises(CrosscamError, match=message) as info:
        open_source(str(path), None, SourceConfig())
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_default_camera_names():
    assert default_camera_name("videos/lobby.mp4") == "lobby"
    assert default_camera_name("MOT17-02/img1") == "MOT17-02"
    assert default_camera_name("rtsp://10.0.0.5:554/stream1?tcp") == "stream1"


@pytest.fixture
def http_server(tmp_path: Path):
    """Serve ``tmp_path`` over HTTP on localhost; yields (server, base URL)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_stream_reconnects_when_it_drops(tmp_path: Path, http_server):
    _, base = http_server
    write_mjpg_avi(tmp_path / "live.avi", 10)
    waits: list[float] = []
    src = StreamSource(f"{base}/live.avi", "live", SourceConfig(max_frames=25, reconnect_delay_s=0.01), sleep=waits.append)
    with src:
        frames = list(src)
    # The stream ends ("drops") every 10 frames; each drop costs one re-open after the first delay.
    assert len(frames) == 25 and src.reconnects == 2 and waits == [0.01, 0.01]
    assert [f.index for f in frames] == list(range(25))


def test_stream_gives_up_after_bounded_backoff(tmp_path: Path, http_server):
    server, base = http_server
    write_mjpg_avi(tmp_path / "live.avi", 10)
    waits: list[float] = []

    def server_gone(delay: float) -> None:
        waits.append(delay)
        server.shutdown()
        server.server_close()

    cfg = SourceConfig(reconnect_attempts=4, reconnect_delay_s=0.01, reconnect_max_delay_s=0.03)
    with StreamSource(f"{base}/live.avi", "live", cfg, sleep=server_gone) as src:
        frames = list(src)
    assert len(frames) == 10
    assert waits == [0.01, 0.02, 0.03, 0.03]  # doubling, capped, then it stops trying


def test_unreachable_stream_is_one_line_error():
    with pytest.raises(CrosscamError, match="cannot open the stream"):
        open_source("http://127.0.0.1:9/none.mp4", None, SourceConfig())


def test_video_source_iterates_once(tmp_path: Path):
    src = VideoFileSource(write_mjpg_avi(tmp_path / "a.avi", 3), "a", SourceConfig())
    assert len(list(src)) == 3
    with pytest.raises(RuntimeError):
        list(src)
    src.close()


def _decode(spec: Path, cfg: SourceConfig, frames: FrameRange | None = None):
    with open_source(str(spec), "cam", cfg, frames) as src:
        return [(f.index, f.time_s, f.image) for f in src], src


def _assert_same_frames(part, whole, start: int, end: int) -> None:
    expected = [w for w in whole if start <= w[0] < end]
    assert [p[0] for p in part] == [w[0] for w in expected]
    assert [p[1] for p in part] == pytest.approx([w[1] for w in expected], abs=1e-9)
    assert all(np.array_equal(p[2], w[2]) for p, w in zip(part, expected))


def test_a_range_of_the_shared_clip_is_its_frames_bit_for_bit(hall_clip: Path):
    cfg = SourceConfig(max_frames=260)
    whole, _ = _decode(hall_clip, cfg)
    for start, end in ((0, 40), (37, 120), (150, 261), (255, 400)):
        part, src = _decode(hall_clip, cfg, FrameRange(start, end))
        _assert_same_frames(part, whole, start, end)
        assert src.seek == ("none" if start == 0 else "seek")  # an MP4 seeks exactly: no decode from 0
        assert src.frames_expected == len(part)


def test_a_range_of_a_raw_h264_stream_decodes_and_drops_the_frames_before(tmp_path: Path, hall_clip: Path):
    raw = mp4_to_annexb(hall_clip, tmp_path / "hall.264", samples=80)
    whole, _ = _decode(raw, SourceConfig())
    assert len(whole) == 80
    for start, end in ((1, 10), (33, 70), (75, 200)):
        part, src = _decode(raw, SourceConfig(), FrameRange(start, end))
        _assert_same_frames(part, whole, start, end)
        assert src.seek == "decode"  # no index and no timestamps: an exact seek is impossible


def test_a_range_of_an_image_folder_splits_by_file_and_keeps_the_stride(tmp_path: Path):
    seq = write_mot_sequence(tmp_path, 20)
    cfg = SourceConfig(stride=3)
    whole, _ = _decode(seq, cfg)
    for start, end in ((0, 7), (4, 13), (13, 40)):
        part, src = _decode(seq, cfg, FrameRange(start, end))
        _assert_same_frames(part, whole, start, end)
        assert src.frames_expected == len(part)


def test_a_video_range_starting_between_strided_frames_and_past_the_end(tmp_path: Path):
    video = write_mjpg_avi(tmp_path / "cam.avi", 30)
    cfg = SourceConfig(stride=4)
    whole, _ = _decode(video, cfg)
    part, src = _decode(video, cfg, FrameRange(5, 21))
    _assert_same_frames(part, whole, 5, 21)
    assert [p[0] for p in part] == [8, 12, 16, 20] and src.frames_expected == 4
    beyond, src = _decode(video, cfg, FrameRange(40, 50))
    assert beyond == [] and src.frames_failed == 0


def test_a_stream_cannot_be_cut_into_ranges():
    with pytest.raises(CrosscamError, match="cannot be cut"):
        open_source("rtsp://127.0.0.1:9/cam", None, SourceConfig(), FrameRange(10, 20))


def test_many_unreadable_images_are_said_ten_times_then_counted(tmp_path: Path, caplog):
    """An image folder of 5 good and 35 broken files printed 35 warnings."""
    for i in range(40):
        path = tmp_path / f"{i:06d}.png"
        cv2.imwrite(str(path), numbered_frame(i)) if i < 5 else path.write_bytes(b"not an image")
    with open_source(str(tmp_path), "door", SourceConfig()) as src:
        assert len(list(src)) == 5 and src.frames_failed == 35
    said = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(said) == 10 and said[-1].endswith("further skipped frames are only counted (run.json: frames_failed)")


def write_mkv(path: Path, times_ms: list[int]) -> Path:
    """A Matroska file (or, by ``path``'s suffix, an MPEG-TS, or an MP4 with its index first) whose frames
    are shown at ``times_ms`` (a Matroska or MPEG-TS file's frame count is then an estimate)."""
    import av
    from fractions import Fraction

    options = {"movflags": "faststart"} if path.suffix == ".mp4" else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for i, ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(numbered_frame(i), format="bgr24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("times_ms", [
    [100 * i for i in range(20)] + [2000 + 500 * i for i in range(20)],  # 10 fps, then 2 fps
    [5000 + 100 * i for i in range(40)],  # a clock that starts at 5 s
], ids=["variable-rate", "late-start"])
def test_a_complete_matroska_or_mpeg_ts_file_is_not_said_cut_short(tmp_path: Path, caplog, times_ms):
    """Its frame count is duration x mean rate: 176 for 60 frames, and 116 'could not be decoded'."""
    path = write_mkv(tmp_path / "cam.mkv", times_ms)
    with open_source(str(path), "cam", SourceConfig()) as src:
        frames = list(src)
        assert len(frames) == 40 and src.frames_failed == 0
    assert frames[-1].time_s == pytest.approx((times_ms[-1] - times_ms[0]) / 1000, abs=0.01)
    assert not [r for r in caplog.records if "could not be decoded" in r.getMessage()]
    with open_source(str(path), "cam", SourceConfig()) as src:  # what the Ray planner cuts into segments
        assert src.frames_total > 40 and src.counted_frames_end() == 40  # OpenCV's estimate; the packets counted
    ts = write_mkv(tmp_path / "cam.ts", times_ms)  # MPEG-TS records no count either
    with open_source(str(ts), "ts", SourceConfig()) as src:
        assert len(list(src)) == 40 and src.frames_failed == 0, src.frames_total
    for cut in (tmp_path / "cut.mkv", write_mkv(tmp_path / "late.mp4", times_ms)):  # files cut in half still are
        whole = path if cut.suffix == ".mkv" else cut
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        caplog.clear()
        with open_source(str(cut), "cut", SourceConfig()) as src:
            assert 0 < len(list(src)) < 40 and src.frames_failed > 0, cut
        assert [r for r in caplog.records if "could not be decoded" in r.getMessage()]
        if cut.suffix == ".mkv":  # a Ray run plans it from its packets: the planner says it is cut short
            with open_source(str(cut), "cut", SourceConfig()) as src:
                assert src.counted_frames_end() < 40
            assert [r for r in caplog.records if "the file is cut short" in r.getMessage()]


def test_one_image_is_a_camera_of_one_frame_and_said_so(tmp_path: Path, caplog):
    cv2.imwrite(str(tmp_path / "door.jpg"), numbered_frame(3))
    with open_source(str(tmp_path / "door.jpg"), None, SourceConfig()) as src:
        assert len(list(src)) == 1
    assert sum("one image, tracked as a camera of one frame" in r.getMessage() for r in caplog.records) == 1
