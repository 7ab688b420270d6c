"""Audio loading: hash a file, decode its first `max_seconds` to 16 kHz mono float32.

Memory stays bounded for hours-long files: only the first `max_seconds` seconds are decoded
(`soundfile` reads frames in blocks; each block is down-mixed and fed to a streaming soxr
resampler), so a 3-hour file costs the same memory as a 10-minute one. The sha256 of the file's
bytes (the cache's audio identity) is computed by streaming 1 MiB blocks.

Decoders: libsndfile (WAV/FLAC/OGG/MP3, recognised by content so a renamed file still decodes),
then PyAV (ffmpeg: m4a, aac, opus, ...) as a fallback.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np

from toolcache.errors import AudioError
from toolcache.registry import AudioClip

DEFAULT_SAMPLE_RATE = 16000          # Hz; what most tools want
DEFAULT_MAX_SECONDS = 600.0          # seconds decoded per file unless overridden (10 min)
MAX_SECONDS_ENV = "AUDIOROUTER_MAX_SECONDS"
# Upper bound on max_seconds: peak memory is linear in the seconds decoded (audio_features grew
# RSS by 110 MB for 60 s of audio, measured; so ~1.1 GB at the 600 s default, ~3.3 GB at the cap).
MAX_SECONDS_CAP = 1800.0
MAX_SECONDS_CAP_WHY = "about 1.8 MB per second for audio_features: ~3.3 GB at 1800 s"
_MAX_SECONDS_ENV_B = MAX_SECONDS_ENV.encode()
HASH_BLOCK = 1 << 20                 # 1 MiB read blocks for hashing
DECODE_BLOCK_SECONDS = 30.0          # seconds decoded per soundfile block (bounds peak memory)
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")

_FIX_FORMATS = "pass a WAV/FLAC/MP3/OGG file"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of the file's bytes, read in 1 MiB blocks (constant memory)."""
    h = hashlib.sha256()
    try:
        f = open(path, "rb", buffering=0)
    except PermissionError:
        raise AudioError(f"cannot read {os.fspath(path)}: permission denied; fix the file's permissions") from None
    with f:
        buf = bytearray(HASH_BLOCK)
        view = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def default_max_seconds() -> float:
    """`$AUDIOROUTER_MAX_SECONDS` if set (positive number), else 600 s."""
    data = getattr(os.environ, "_data", None)  # POSIX: the bytes dict behind os.environ (no KeyError cost)
    if isinstance(data, dict) and os.name == "posix":
        raw_b = data.get(_MAX_SECONDS_ENV_B)
        raw = None if raw_b is None else os.fsdecode(raw_b)
    else:
        raw = os.environ.get(MAX_SECONDS_ENV)
    if not raw or not raw.strip():
        return DEFAULT_MAX_SECONDS
    return validate_max_seconds(raw.strip(), source=f"${MAX_SECONDS_ENV}")


def validate_max_seconds(value, source: str = "max_seconds") -> float:
    """A positive finite float of at most MAX_SECONDS_CAP, else ValueError naming the fix."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}={value!r} is not a number; set it to a positive number of seconds, e.g. 600")
    if not np.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{source}={value!r} must be a positive number of seconds, e.g. 600")
    if seconds > MAX_SECONDS_CAP:
        raise ValueError(
            f"{source}={value!r} is above the cap of {MAX_SECONDS_CAP:g} s: a tool's peak memory grows "
            f"linearly with the seconds analysed ({MAX_SECONDS_CAP_WHY}); pass at most {MAX_SECONDS_CAP:g}, "
            f"or cut the file into parts (e.g. `sox long.wav part.wav trim 0 {MAX_SECONDS_CAP:g} : newfile : restart`)"
        )
    return seconds


def check_audio_path(path: str | os.PathLike) -> Path:
    """The path as a Path, or AudioError for a missing file, a directory or an empty file."""
    return Path(stat_audio_path(path)[0])


def stat_audio_path(path: str | os.PathLike) -> tuple[str, os.stat_result]:
    """(path string, its stat) or AudioError: missing, directory, unreadable, empty. One stat call
    on the happy path (this runs on every cache hit)."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise AudioError(f"audio file not found: {p}; check the path (relative paths are from {os.getcwd()})") from None
    except OSError as exc:
        raise AudioError(f"cannot access {p}: {exc.strerror}; check the path and its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"{p} is a directory, not an audio file; {_FIX_FORMATS} (use `cache warm` for folders)")
    # (Readability is checked where the bytes are read: hashing and decoding. A hit needs no read.)
    if st.st_size == 0:
        raise AudioError(f"{p} is empty (0 bytes); re-export or re-download the audio")
    return p, st


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    max_seconds: float | None = None,
    sha256: str | None = None,
) -> AudioClip:
    """Decode `path` to mono float32 at `sample_rate` Hz, at most `max_seconds` seconds.

    `max_seconds=None` uses `$AUDIOROUTER_MAX_SECONDS` or 600 s. `sha256` may be passed when the
    caller already knows the file's hash (the cache memo), to avoid reading the bytes twice.
    Raises AudioError (one line: file, problem, fix) for anything that is not decodable audio.
    """
    p = check_audio_path(path)
    if not os.access(p, os.R_OK):
        raise AudioError(f"cannot read {p}: permission denied; fix the file's permissions")
    if int(sample_rate) <= 0:
        raise ValueError(f"sample_rate={sample_rate!r} must be a positive number of Hz, e.g. 16000")
    limit = default_max_seconds() if max_seconds is None else validate_max_seconds(max_seconds)
    try:
        samples, meta = _decode_soundfile(p, int(sample_rate), limit)
    except _NotDecodable as sf_exc:
        try:
            samples, meta = _decode_av(p, int(sample_rate), limit)
        except _NotDecodable as av_exc:
            raise AudioError(
                f"cannot decode {p}: not a readable audio file or a corrupt/truncated one "
                f"(libsndfile: {sf_exc}; ffmpeg: {av_exc}); {_FIX_FORMATS}"
            ) from None
    if samples.size == 0:
        raise AudioError(f"{p} contains no audio samples (zero-length audio); {_FIX_FORMATS} with sound in it")
    if meta["nonfinite"]:
        # NaN/inf would flow into every tool (a NaN tone gets a tempo, all-NaN reads as "Silence").
        # Refused, not repaired: which value a NaN stood for is unknown. Checked before the clip
        # below, which would silently turn +-inf into +-1.
        raise AudioError(
            f"{p} has {meta['nonfinite']} non-finite samples (NaN or infinity; first at "
            f"{meta['first_nonfinite_s']:.3f} s): the file is corrupt and nothing was analysed or cached; "
            f"re-export it from its source so every sample is a finite number"
        )
    # Decoders can overshoot [-1, 1] slightly (MP3, resampling ringing): clip to the documented range.
    np.clip(samples, -1.0, 1.0, out=samples)
    return AudioClip(
        path=str(p),
        sha256=sha256 or file_sha256(p),
        samples=samples,
        sample_rate=int(sample_rate),
        duration_s=samples.size / float(sample_rate),
        original_duration_s=meta["original_duration_s"],
        original_sample_rate=meta["original_sample_rate"],
        channels=meta["channels"],
        truncated=meta["truncated"],
        header_duration_s=meta.get("header_duration_s"),
    )


class _NotDecodable(Exception):
    """Internal: this decoder cannot read the file (the next one is tried)."""


def _decode_soundfile(p: Path, sample_rate: int, max_seconds: float) -> tuple[np.ndarray, dict]:
    import soundfile as sf

    try:
        f = sf.SoundFile(str(p))
    except Exception as exc:  # LibsndfileError, RuntimeError: unknown format or broken header
        raise _NotDecodable(" ".join(str(exc).split())) from None
    with f:
        sr_in = int(f.samplerate)
        total = int(f.frames) if f.frames and f.frames > 0 else 0
        want = int(round(max_seconds * sr_in))
        block = max(1, int(DECODE_BLOCK_SECONDS * sr_in))
        resampler = _Resampler(sr_in, sample_rate)
        # Output buffer sized for the expected length: no second full-size copy at the end.
        parts = _Collector(int(min(total or want, want) * sample_rate / sr_in) + 1024)
        read = 0
        nonfinite, first_bad = 0, -1  # frames (in the file's rate) holding NaN/inf, first such frame
        try:
            while read < want:
                data = f.read(frames=min(block, want - read), dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                # Down-mix: mean over channels (16-bit stereo -> mono float32 in [-1, 1]).
                mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
                # Counted before resampling (which smears one NaN over its neighbours); a NaN or
                # inf in any channel makes the mean non-finite.
                finite = np.isfinite(mono)
                bad = mono.size - int(np.count_nonzero(finite))
                if bad:
                    if first_bad < 0:
                        first_bad = read + int(np.argmin(finite))
                    nonfinite += bad
                read += data.shape[0]
                parts.append(resampler.push(mono))
                del data, mono, finite
        except Exception as exc:  # corrupt data after a valid header
            if read == 0:
                raise _NotDecodable(" ".join(str(exc).split())) from None
        parts.append(resampler.flush())
        channels = int(f.channels)
        # Truncated when the file holds more than we read: the header says so, or one more frame exists.
        # (A header that promises more frames than the file holds is not truncation: EOF came first.)
        more = False
        if read >= want:
            more = total > read
            if not more:
                try:
                    more = f.read(frames=1, dtype="float32", always_2d=True).shape[0] > 0
                except Exception:
                    more = False
        fmt = str(f.format)
    original_frames = max(total, read + 1) if more else read
    # Header promises more than the file holds (a cut download or copy). libsndfile clamps a WAV's
    # frame count to the bytes present, so for WAV the RIFF data-chunk size is read directly;
    # for other formats (FLAC STREAMINFO, ...) the frame count it reports is the header's.
    header_frames = None
    if fmt in ("WAV", "WAVEX"):
        declared = _wav_declared_frames(p)
        if declared is not None and declared[0] > declared[1]:
            header_frames = declared[0]
            original_frames = max(read, declared[1])
            more = more and declared[1] > read
    elif read < want and total > read:  # EOF (or a decode error) came before the header's length
        header_frames = total
    samples = parts.array()
    return samples, {
        "original_duration_s": original_frames / float(sr_in),
        "original_sample_rate": sr_in,
        "channels": channels,
        "truncated": bool(more),
        "header_duration_s": None if header_frames is None else header_frames / float(sr_in),
        "nonfinite": nonfinite,
        "first_nonfinite_s": max(first_bad, 0) / float(sr_in),
    }


def _wav_declared_frames(p: Path) -> tuple[int, int] | None:
    """(frames the RIFF header's data chunk declares, frames the file's bytes hold), or None when
    the header cannot say (RF64, streaming placeholder sizes 0 / 0xFFFFFFFF, no data chunk)."""
    import struct

    try:
        size = os.path.getsize(p)
        with open(p, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return None
            endian = "<" if head[:4] == b"RIFF" else ">"
            block_align = 0
            for _ in range(64):  # chunks before 'data': fmt, LIST, bext, ... (bounded walk)
                hdr = fh.read(8)
                if len(hdr) < 8:
                    return None
                cid, csize = hdr[:4], struct.unpack(endian + "I", hdr[4:])[0]
                if cid == b"fmt ":
                    fmt = fh.read(min(csize, 16))
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack(endian + "H", fmt[12:14])[0]
                    fh.seek(csize - len(fmt) + (csize & 1), os.SEEK_CUR)
                elif cid == b"data":
                    if not block_align or csize in (0, 0xFFFFFFFF):
                        return None
                    held = max(0, size - fh.tell())
                    return csize // block_align, held // block_align
                else:
                    fh.seek(csize + (csize & 1), os.SEEK_CUR)
    except (OSError, struct.error):
        return None
    return None


def _decode_av(p: Path, sample_rate: int, max_seconds: float) -> tuple[np.ndarray, dict]:
    """Fallback through ffmpeg (PyAV): resampled to mono float32 by ffmpeg's resampler."""
    try:
        import av
    except ImportError:  # pragma: no cover - av is a soft dependency
        raise _NotDecodable("PyAV not installed") from None
    try:
        container = av.open(str(p))
    except Exception as exc:
        raise _NotDecodable(" ".join(str(exc).split())) from None
    with container:
        if not container.streams.audio:
            raise _NotDecodable("no audio stream")
        stream = container.streams.audio[0]
        sr_in = int(stream.rate or stream.codec_context.sample_rate or 0)
        channels = int(stream.codec_context.channels or 1)
        if stream.duration is not None and stream.time_base is not None:
            original = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            original = container.duration / 1_000_000.0  # av.time_base is microseconds
        else:
            original = 0.0
        want = int(round(max_seconds * sample_rate))
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        parts: list[np.ndarray] = []
        got = 0
        truncated = False
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    parts.append(arr)
                    got += arr.size
                if got >= want:
                    truncated = True
                    break
            if not truncated:
                for out in resampler.resample(None):
                    arr = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    parts.append(arr)
                    got += arr.size
        except Exception as exc:
            if got == 0:
                raise _NotDecodable(" ".join(str(exc).split())) from None
    samples = np.concatenate(parts)[:want] if parts else np.zeros(0, np.float32)
    decoded = samples.size / float(sample_rate)
    finite = np.isfinite(samples)
    bad = samples.size - int(np.count_nonzero(finite))
    # The container's duration is an estimate for some codecs: only a clear shortfall (more than
    # 0.5 s and 2 %) counts as a file holding less than its header says.
    short = not truncated and original > decoded + max(0.5, 0.02 * original)
    return np.ascontiguousarray(samples, dtype=np.float32), {
        "original_duration_s": decoded if short else max(original, decoded),
        "original_sample_rate": sr_in,
        "channels": channels,
        "truncated": bool(truncated and original > decoded + 1e-3),
        "header_duration_s": original if short else None,
        "nonfinite": bad,
        "first_nonfinite_s": (int(np.argmin(finite)) if bad else 0) / float(sample_rate),
    }


class _Resampler:
    """Streaming resampler (soxr HQ) so blocks resample without edge artefacts."""

    def __init__(self, sr_in: int, sr_out: int):
        self.same = sr_in == sr_out
        if not self.same:
            import soxr

            self.stream = soxr.ResampleStream(sr_in, sr_out, 1, dtype="float32", quality="HQ")

    def push(self, mono: np.ndarray) -> np.ndarray:
        if self.same:
            return np.array(mono, dtype=np.float32, copy=True)
        return self.stream.resample_chunk(np.ascontiguousarray(mono, dtype=np.float32))

    def flush(self) -> np.ndarray:
        if self.same:
            return np.zeros(0, np.float32)
        return self.stream.resample_chunk(np.zeros(0, np.float32), last=True)


class _Collector:
    """Append float32 pieces into one preallocated buffer (grows by doubling if the guess was short)."""

    def __init__(self, capacity: int):
        self.buf = np.empty(max(capacity, 1024), dtype=np.float32)
        self.n = 0

    def append(self, piece: np.ndarray) -> None:
        need = self.n + piece.size
        if need > self.buf.size:
            bigger = np.empty(max(need, 2 * self.buf.size), dtype=np.float32)
            bigger[: self.n] = self.buf[: self.n]
            self.buf = bigger
        self.buf[self.n : need] = piece
        self.n = need

    def array(self) -> np.ndarray:
        # In-place realloc (no second full-size copy); nothing else references the buffer.
        self.buf.resize(self.n, refcheck=False)
        return self.buf
