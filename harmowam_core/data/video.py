"""MP4 encoding and decoding with PyAV.

Frames carry pts = frame_index in a 1/fps time base, so frame k of an episode sits at timestamp k / fps:
the timestamps LeRobot asks a decoder for. Encoding is streaming (one frame at a time, nothing buffered in
Python); decoding seeks to the keyframe before the first requested frame and decodes forward once.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from harmowam_core.data.format import CODECS

GOP = 10  # keyframe interval: bounds how far a random-access read decodes before the first wanted frame


class VideoEncoder:
    """Append RGB uint8 frames of one camera to an mp4 file."""

    def __init__(self, path: Path, fps: int, height: int, width: int, codec: str = "h264", crf: int = 18):
        import av  # here, not at the top: model code imports this module on machines without PyAV

        self.path = Path(path)
        self.container = av.open(str(self.path), mode="w")
        options = {"crf": str(crf), "g": str(GOP)}
        if codec == "h264":
            options.update({"preset": "veryfast", "bf": "0", "tune": "zerolatency"})
        else:
            options.update({"preset": "10"})
        self.stream = self.container.add_stream(CODECS[codec], rate=fps, options=options)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = Fraction(1, fps)
        self.stream.codec_context.time_base = Fraction(1, fps)
        self.count = 0
        self.shape = (height, width, 3)
        self.av = av

    def add(self, rgb: np.ndarray) -> None:
        if rgb.shape != self.shape or rgb.dtype != np.uint8:
            raise ValueError(f"expected a uint8 frame of shape {self.shape}, got {rgb.dtype} {rgb.shape}")
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.count
        frame.time_base = self.stream.codec_context.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self.container is None:
            return
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.container = None


def video_duration(path: Path) -> float | None:
    """Seconds of video in the first video stream of `path` (the stream's duration, else the container's;
    None when the file records neither), as LeRobot measures it when it concatenates episodes."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return float(container.duration / av.time_base)
    return None


def decode_frames(path: Path, indices: list[int] | np.ndarray, fps: int, offset: int = 0) -> np.ndarray:
    """Frames `offset + i` for i in `indices` of the video at `path`, as (len(indices), H, W, 3) uint8.

    Decodes the span from the keyframe before min(indices) to max(indices) once, whatever the order or
    repetition of `indices` (padding repeats a frame).
    """
    import av

    wanted = np.asarray(indices, dtype=np.int64) + offset
    if wanted.size == 0:
        raise ValueError("no frames requested")
    lo, hi = int(wanted.min()), int(wanted.max())
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base

        def index_of(frame) -> int:
            return int(round(float(frame.pts * tb) * fps))

        if lo > 0:
            container.seek(int(lo / fps / tb), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            k = index_of(frame)
            if k > hi:
                break
            if k >= lo:
                got[k] = frame.to_ndarray(format="rgb24")
    missing = sorted(set(wanted.tolist()) - set(got))
    if missing:
        raise IndexError(f"{path}: frames {missing[:5]} not in the video")
    return np.stack([got[int(k)] for k in wanted])
