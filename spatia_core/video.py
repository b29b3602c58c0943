"""Write frame sequences as H.264 mp4 (imageio + the ffmpeg bundled by imageio-ffmpeg)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import FileFormatError, InputError


class VideoWriter:
    """Append uint8 (H, W, 3) frames; the file appears under its name only on :meth:`close`."""

    def __init__(self, path: str | os.PathLike, fps: float = 24.0):
        import imageio.v2 as imageio

        if not (np.isfinite(fps) and 0 < fps <= 1000):
            raise InputError(f"video frame rate must be in (0, 1000] fps, got {fps}")
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp{self.path.suffix}")
        self._frames = 0
        try:
            # ffmpeg's own messages stay quiet below "fatal": failures are checked and reported by close()
            self._writer = imageio.get_writer(
                self._tmp, fps=fps, codec="libx264", quality=8, macro_block_size=2, ffmpeg_log_level="fatal"
            )
        except Exception as exc:  # imageio raises several types for missing ffmpeg/paths
            raise FileFormatError(f"cannot open video {self.path}: {exc}") from exc

    def append(self, frames: np.ndarray) -> None:
        """Add one (H, W, 3) frame or a (T, H, W, 3) batch."""
        frames = np.asarray(frames)
        try:
            for frame in frames if frames.ndim == 4 else frames[None]:
                self._writer.append_data(np.ascontiguousarray(frame, dtype=np.uint8))
                self._frames += 1
        except OSError as exc:  # ffmpeg died (a full disk): imageio reports a broken pipe
            raise FileFormatError(f"cannot write video {self.path}: {exc}") from None

    def close(self) -> Path:
        """Finish the file, check that every frame is in it (ffmpeg's exit status is not reported
        by imageio: a full disk gives a short file), then move it into place."""
        import imageio_ffmpeg

        try:
            self._writer.close()
            written = imageio_ffmpeg.count_frames_and_secs(str(self._tmp))[0] if self._frames else 0
        except (OSError, RuntimeError) as exc:
            written, detail = -1, str(exc).strip().splitlines()[-1:] or [""]
        else:
            detail = [""]
        if written != self._frames:
            self._tmp.unlink(missing_ok=True)
            raise FileFormatError(f"could not write video {self.path}: {max(written, 0)} of {self._frames} frames "
                                  f"in the file (disk full?) {detail[0]}".rstrip())
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self._tmp.unlink(missing_ok=True)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video, uint8 (T, H, W, 3) (decoded by the ffmpeg of imageio-ffmpeg)."""
    import imageio_ffmpeg

    if not Path(path).is_file():
        raise FileFormatError(f"no such video: {path}")
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        width, height = next(reader)["size"]
        frames = [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]
    except (RuntimeError, OSError, StopIteration) as exc:
        raise FileFormatError(f"cannot read video {path}: {exc}") from exc
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)
