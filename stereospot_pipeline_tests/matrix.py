"""The conformance matrix: tiny clips of the kinds of video people keep on their disks, made with the
bundled ffmpeg (containers, codecs, timing, geometry, colour, audio, extra streams).

Each class is one ``MatrixClip``: how to make it, and what a correct conversion shows that the
clip's own header cannot say (its display aspect, for one). Everything else the test measures on
the source itself with the ffmpeg CLI (an implementation independent of the pipeline's PyAV code).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg

SIZE = "96x64"
SECONDS = 1.0
FPS = 10


@dataclass(frozen=True)
class Form:
    """How big the clips are made: ``scale`` multiplies every frame side given to ``video_in``,
    ``stretch`` every duration. The CI matrix is the small form; ``LARGE`` (a few frames of
    a real size, several seconds) is the slow one."""

    scale: int = 1
    stretch: float = 1.0


SMALL, LARGE = Form(), Form(scale=3, stretch=3.0)
_form = SMALL


@contextmanager
def made_in(form: Form) -> Iterator[None]:
    """Clips built inside are made in ``form``."""
    global _form
    before, _form = _form, form
    try:
        yield
    finally:
        _form = before


def ffmpeg(*args) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True,
                   timeout=300)


def video_in(size: str = SIZE, fps: float = FPS, seconds: float = SECONDS, pattern: str = "testsrc2") -> list[str]:
    """``pattern``: testsrc2 (moving detail) or smptebars (flat saturated colours, where a YUV
    matrix read wrongly shows at once)."""
    w, h = (int(side) * _form.scale for side in size.split("x"))
    return ["-f", "lavfi", "-i", f"{pattern}=size={w}x{h}:rate={fps}:duration={seconds * _form.stretch}"]


def tone_in(seconds: float = SECONDS, rate: int = 48000, freq: int = 440) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate={rate}:duration={seconds * _form.stretch}"]


H264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "5"]


@dataclass(frozen=True)
class MatrixClip:
    id: str
    suffix: str
    build: Callable[[Path], None]
    group: str
    what: str  # the class, for people (the README table)
    display_aspect: Fraction | None = None  # width/height as shown, where the pixels are not square
    hdr: bool = False  # PQ or HLG: tone-mapped to SDR BT.709 by default
    tags: dict = field(default_factory=dict)  # colour tags the output must carry (ffmpeg names)


def _simple(vcodec: list[str], acodec: list[str] | None = None, *, size: str = SIZE, fps: float = FPS,
            fmt: list[str] = (), vf: str | None = None, audio_seconds: float = SECONDS,
            pattern: str = "testsrc2") -> Callable[[Path], None]:
    def build(p: Path) -> None:
        args = [*video_in(size, fps, pattern=pattern)]
        if acodec is not None:
            args += tone_in(audio_seconds)
        args += vcodec
        if vf:
            args += ["-vf", vf]
        if acodec is not None:
            args += acodec
        ffmpeg(*args, *fmt, p)
    return build


def _anamorphic(size: str, sar: str, vcodec: list[str] | None = None, fmt: list[str] = ()) -> Callable[[Path], None]:
    return _simple(vcodec or H264, ["-c:a", "aac"], size=size, vf=f"setsar={sar.replace(':', '/')}", fmt=fmt)


def _aspect(size: str, sar: str) -> Fraction:
    w, h = map(int, size.split("x"))
    return Fraction(w, h) * Fraction(sar.replace(":", "/"))


def _rotated(degrees: int) -> Callable[[Path], None]:
    def build(p: Path) -> None:
        stored = p.with_name(f"stored{degrees}.mp4")
        ffmpeg(*video_in(), *tone_in(), *H264, "-c:a", "aac", stored)
        ffmpeg("-display_rotation:v:0", degrees, "-i", stored, "-c", "copy", p)
    return build


def _far_start(fmt: list[str], offset: float, vcodec: list[str], acodec: list[str]) -> Callable[[Path], None]:
    """Timestamps that start far from zero (camcorders, broadcast recordings), long GOP."""
    def build(p: Path) -> None:
        ffmpeg(*video_in(seconds=2), *tone_in(2), *vcodec, *acodec, "-output_ts_offset", offset, *fmt, p)
    return build


def _audio_offset(video_delay: float, audio_delay: float, acodec: list[str] = ("-c:a", "aac"),
                  suffix_fmt: list[str] = ()) -> Callable[[Path], None]:
    """Audio leading (video_delay > 0) or lagging (audio_delay > 0) the video."""
    def build(p: Path) -> None:
        ffmpeg("-itsoffset", video_delay, *video_in(), "-itsoffset", audio_delay, *tone_in(),
               *H264, *acodec, *suffix_fmt, p)
    return build


def _audio_channels(layout: str, acodec: list[str], fmt: list[str] = ()) -> Callable[[Path], None]:
    def build(p: Path) -> None:
        ffmpeg(*video_in(), *tone_in(), "-filter_complex", f"[1:a]aformat=channel_layouts=mono,"
               f"pan={layout}|" + "|".join(f"c{i}=c0" for i in range(_channels(layout))) + "[a]",
               "-map", "0:v", "-map", "[a]", *H264, *acodec, *fmt, p)
    return build


def _channels(layout: str) -> int:
    return {"mono": 1, "stereo": 2, "5.1": 6, "7.1": 8}[layout]


def _fps_change(p: Path) -> None:
    """10 fps then 25 fps in one file on one continuous timeline (joined edits)."""
    a, b, listing = p.with_name("part_a.mkv"), p.with_name("part_b.mkv"), p.with_name("parts.txt")
    ffmpeg(*video_in(fps=10, seconds=0.6), *tone_in(0.6), *H264, "-c:a", "aac", a)
    ffmpeg(*video_in(fps=25, seconds=0.6), *tone_in(0.6), *H264, "-c:a", "aac", b)
    listing.write_text(f"file '{a}'\nfile '{b}'\n")
    ffmpeg("-f", "concat", "-safe", "0", "-i", listing, "-c", "copy", p)


def _ts_joined(p: Path) -> None:
    """Two MPEG-TS recordings at 10 and 25 fps joined byte for byte (as recorders split files)."""
    a, b = p.with_name("part_a.ts"), p.with_name("part_b.ts")
    ffmpeg(*video_in(fps=10, seconds=0.6), *tone_in(0.6), *H264, "-c:a", "aac", a)
    ffmpeg(*video_in(fps=25, seconds=0.6), *tone_in(0.6), *H264, "-c:a", "aac", b)
    ffmpeg("-i", f"concat:{a}|{b}", "-c", "copy", p)


def _vfr(p: Path) -> None:
    ffmpeg(*video_in(fps=30), "-vf", "select='not(mod(n\\,3))+eq(mod(n\\,7)\\,0)'", "-fps_mode", "vfr",
           "-video_track_timescale", "1000", *H264, p)


def _edit_list(p: Path) -> None:
    """An MP4 trimmed by stream copy: the edit list hides the frames before the cut."""
    full = p.with_name("full.mp4")
    ffmpeg(*video_in(seconds=1.5), *tone_in(1.5), *H264, "-bf", "2", "-c:a", "aac", full)
    ffmpeg("-ss", "0.35", "-i", full, "-c", "copy", p)


def _several_tracks(p: Path) -> None:
    ffmpeg(*video_in(), *tone_in(freq=300), *tone_in(freq=500), "-map", "0", "-map", "1", "-map", "2", *H264,
           "-c:a:0", "aac", "-c:a:1", "ac3", p)


def _cover_art(codec: str) -> Callable[[Path], None]:
    """A cover picture stored as the first stream, before the real video (MP4 readers see an
    attached picture; MKV keeps it as a one-frame video track)."""
    def build(p: Path) -> None:
        cover = p.with_name("cover.png")
        ffmpeg("-f", "lavfi", "-i", "color=red:size=64x64:duration=0.1", "-frames:v", "1", cover)
        ffmpeg("-i", cover, *video_in(), *tone_in(), "-map", "0", "-map", "1", "-map", "2",
               "-c:v:0", codec, "-disposition:v:0", "attached_pic", "-c:v:1", "libx264", "-pix_fmt:v:1", "yuv420p",
               "-c:a", "aac", p)
    return build


def _subtitles(p: Path) -> None:
    srt = p.with_name("subs.srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:00,900\nhello\n")
    ffmpeg(*video_in(), *tone_in(), "-i", srt, "-map", "0", "-map", "1", "-map", "2", *H264, "-c:a", "aac",
           "-c:s", "srt", p)


def _timecode_data(p: Path) -> None:
    ffmpeg(*video_in(), *tone_in(), *H264, "-c:a", "aac", "-timecode", "01:00:00:00", p)


def _x265(extra: str = "", pix: str = "yuv420p") -> list[str]:
    params = "log-level=error:keyint=5" + (f":{extra}" if extra else "")
    return ["-c:v", "libx265", "-pix_fmt", pix, "-x265-params", params]


def _hdr(transfer: str) -> list[str]:
    """10-bit HEVC tagged BT.2020 + ``transfer``: tags in the container and in the bitstream."""
    return [*_x265(f"colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc", "yuv420p10le"),
            "-color_primaries", "bt2020", "-color_trc", transfer, "-colorspace", "bt2020nc"]


def _tagged(primaries: str, trc: str, matrix: str, rng: str = "tv", pix: str = "yuv420p") -> list[str]:
    # The frames carry the tags (setparams) and the encoder writes them: the options alone only
    # tag the container.
    return ["-c:v", "libx264", "-pix_fmt", pix, "-g", "5", "-color_primaries", primaries, "-color_trc", trc,
            "-colorspace", matrix, "-color_range", rng,
            "-vf", f"scale=out_range={'full' if rng == 'pc' else 'limited'},"
                   f"setparams=color_primaries={primaries}:color_trc={trc}:colorspace={matrix}:range={rng}"]


AAC = ["-c:a", "aac"]
PAL_SAR = "64:45"
BARS = "smptebars"

CLIPS: list[MatrixClip] = [
    # --- containers and codecs -------------------------------------------------------------
    MatrixClip("mp4-h264-aac", ".mp4", _simple(H264, AAC), "codec", "MP4, H.264 8-bit, AAC"),
    MatrixClip("mp4-h264-10bit", ".mp4", _simple(["-c:v", "libx264", "-pix_fmt", "yuv420p10le", "-g", "5"], AAC),
               "codec", "MP4, H.264 10-bit"),
    MatrixClip("mp4-hevc-8bit", ".mp4", _simple([*_x265(), "-tag:v", "hvc1"], AAC), "codec", "MP4, HEVC 8-bit"),
    MatrixClip("mkv-hevc-10bit", ".mkv", _simple(_x265(pix="yuv420p10le"), ["-c:a", "libopus"]), "codec",
               "MKV, HEVC 10-bit SDR, Opus"),
    MatrixClip("webm-vp8-vorbis", ".webm", _simple(["-c:v", "libvpx", "-g", "5"], ["-c:a", "libvorbis"]), "codec",
               "WebM, VP8, Vorbis"),
    MatrixClip("webm-vp9-opus", ".webm", _simple(["-c:v", "libvpx-vp9", "-g", "5", "-deadline", "realtime"],
                                                 ["-c:a", "libopus"]), "codec", "WebM, VP9, Opus"),
    MatrixClip("mkv-av1-opus", ".mkv", _simple(["-c:v", "libsvtav1", "-preset", "12", "-g", "5"], ["-c:a", "libopus"]),
               "codec", "MKV, AV1 (SVT), Opus"),
    MatrixClip("ts-h264-ac3", ".ts", _simple(H264, ["-c:a", "ac3"]), "container", "MPEG-TS, H.264, AC-3"),
    MatrixClip("vob-mpeg2-ac3-dvd", ".vob", _simple(["-c:v", "mpeg2video", "-bf", "2", "-g", "6"], ["-c:a", "ac3"],
                                                    fmt=["-f", "dvd"]), "container",
               "DVD program stream (.vob): MPEG-2 with B-frames, AC-3"),
    MatrixClip("mpg-mpeg2-mp2", ".mpg", _simple(["-c:v", "mpeg2video", "-bf", "2", "-g", "6"], ["-c:a", "mp2"]),
               "container", "MPEG-PS (.mpg): MPEG-2, MP2"),
    MatrixClip("avi-divx-packed-bframes", ".avi",
               _simple(["-c:v", "mpeg4", "-bf", "2", "-g", "6", "-vtag", "DX50"], ["-c:a", "libmp3lame"]),
               "timing", "AVI, MPEG-4 ASP (DivX) with B-frames, MP3 (decode-order timestamps)"),
    MatrixClip("avi-xvid-bframes", ".avi", _simple(["-c:v", "libxvid", "-bf", "2", "-g", "6"], ["-c:a", "ac3"]),
               "timing", "AVI, Xvid with B-frames, AC-3"),
    MatrixClip("avi-mjpeg-pcm", ".avi", _simple(["-c:v", "mjpeg", "-q:v", "3"], ["-c:a", "pcm_s16le"]), "codec",
               "AVI, MJPEG (full-range JPEG), PCM"),
    MatrixClip("mov-prores-pcm", ".mov", _simple(["-c:v", "prores_ks", "-profile:v", "0"], ["-c:a", "pcm_s24le"]),
               "codec", "MOV, ProRes 422 Proxy (10-bit 4:2:2), PCM 24-bit"),
    MatrixClip("mov-dnxhr", ".mov", _simple(["-c:v", "dnxhd", "-profile:v", "dnxhr_lb", "-pix_fmt", "yuv422p"],
                                            ["-c:a", "pcm_s16le"], size="256x128"), "codec",
               "MOV, DNxHR LB (4:2:2; its smallest frame is 256x120)"),
    MatrixClip("ogg-theora-214px", ".ogg", _simple(["-c:v", "libtheora", "-q:v", "7"], ["-c:a", "libvorbis"],
                                                   size="214x120"), "geometry",
               "Ogg, Theora 214x120 (width not a multiple of 16), Vorbis"),
    MatrixClip("flv-sorenson-mp3", ".flv", _simple(["-c:v", "flv", "-g", "5"], ["-c:a", "libmp3lame", "-ar", "44100"]),
               "container", "FLV, Sorenson H.263, MP3"),
    MatrixClip("3gp-h264-aac", ".3gp", _simple(H264, ["-c:a", "aac", "-ac", "1", "-ar", "16000"]), "container",
               "3GP phone clip, H.264, mono AAC"),
    MatrixClip("wmv-wmv2-wma", ".wmv", _simple(["-c:v", "wmv2", "-g", "5"], ["-c:a", "wmav2"]), "container",
               "ASF/WMV, WMV8, WMA"),
    MatrixClip("avi-msmpeg4", ".avi", _simple(["-c:v", "msmpeg4", "-g", "5"], ["-c:a", "libmp3lame"]), "codec",
               "AVI, MS-MPEG4 v3"),
    MatrixClip("mxf-mpeg2", ".mxf", _simple(["-c:v", "mpeg2video", "-g", "1", "-pix_fmt", "yuv422p", "-r", "25"],
                                            ["-c:a", "pcm_s16le"], fps=25), "container", "MXF, MPEG-2 4:2:2 intra"),
    MatrixClip("mkv-ffv1-flac", ".mkv", _simple(["-c:v", "ffv1"], ["-c:a", "flac"]), "codec", "MKV, FFV1, FLAC"),
    MatrixClip("gif-palette", ".gif", _simple(["-c:v", "gif"]), "container", "animated GIF (8-bit palette, no audio)"),
    # --- timing ------------------------------------------------------------------------------
    MatrixClip("m2ts-avchd-far-start", ".m2ts",
               _far_start(["-f", "mpegts", "-mpegts_m2ts_mode", "1"], 36000,
                          ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "30", "-bf", "2"], ["-c:a", "ac3"]),
               "timing", "M2TS (AVCHD), start 10 h from zero, long GOP"),
    MatrixClip("ts-pts-wrap", ".ts",
               _far_start([], round(2 ** 33 / 90000 - 2.4, 3), ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10"],
                          ["-c:a", "mp2"]),
               "timing", "MPEG-TS whose 33-bit timestamps wrap mid-file"),
    MatrixClip("mp4-vfr", ".mp4", _vfr, "timing", "MP4, variable frame rate"),
    MatrixClip("mp4-edit-list", ".mp4", _edit_list, "timing", "MP4 trimmed by copy (edit list), B-frames"),
    MatrixClip("audio-leads-1s", ".mp4", _audio_offset(1.0, 0.0), "timing", "audio starts 1 s before the video"),
    MatrixClip("audio-lags-1s", ".mkv", _audio_offset(0.0, 1.0), "timing", "audio starts 1 s after the video"),
    MatrixClip("audio-shorter", ".mp4", _simple(H264, AAC, audio_seconds=0.5), "timing", "audio ends at half the video"),
    MatrixClip("audio-longer", ".mkv", _simple(H264, AAC, audio_seconds=1.6), "timing", "audio runs past the video"),
    MatrixClip("fps-change", ".mkv", _fps_change, "timing", "10 fps then 25 fps in one file"),
    MatrixClip("ts-joined-fps-change", ".ts", _ts_joined, "timing", "two TS recordings (10 and 25 fps) joined"),
    # --- geometry ----------------------------------------------------------------------------
    # testsrc2 makes 4:2:0 (even sizes only): crop in 4:4:4 to the odd size.
    MatrixClip("odd-size-97x63", ".mkv", _simple(["-c:v", "libx264", "-pix_fmt", "yuv444p"], AAC, size="98x64",
                                                 vf="format=yuv444p,crop=97:63:0:0"),
               "geometry", "odd frame size 97x63"),
    MatrixClip("width-100", ".mp4", _simple(H264, AAC, size="100x60"), "geometry", "width 100 (not a multiple of 8)"),
    MatrixClip("pal-16x9-anamorphic", ".mp4", _anamorphic("90x72", PAL_SAR), "geometry",
               "DVD PAL 16:9 (720x576 SAR 64:45, scaled down)", display_aspect=_aspect("90x72", PAL_SAR)),
    MatrixClip("pal-4x3-anamorphic", ".mkv", _anamorphic("90x72", "16:15"), "geometry",
               "DVD PAL 4:3 (SAR 16:15)", display_aspect=_aspect("90x72", "16:15")),
    MatrixClip("ntsc-anamorphic-vob", ".vob", _anamorphic("90x60", "32:27", ["-c:v", "mpeg2video", "-bf", "2"],
                                                          fmt=["-c:a", "ac3", "-f", "dvd"]), "geometry",
               "DVD NTSC 16:9 (720x480 SAR 32:27) in a VOB", display_aspect=_aspect("90x60", "32:27")),
    MatrixClip("hdv-anamorphic", ".m2ts", _anamorphic("144x108", "4:3", fmt=["-f", "mpegts"]), "geometry",
               "HDV 1440x1080 SAR 4:3 (scaled down)", display_aspect=_aspect("144x108", "4:3")),
    MatrixClip("rotate-90", ".mp4", _rotated(90), "geometry", "phone video, display matrix 90 degrees"),
    MatrixClip("rotate-180", ".mp4", _rotated(180), "geometry", "display matrix 180 degrees"),
    MatrixClip("rotate-270", ".mov", _rotated(270), "geometry", "display matrix 270 degrees"),
    # --- colour ------------------------------------------------------------------------------
    MatrixClip("bt601-tags", ".mp4", _simple(_tagged("smpte170m", "smpte170m", "smpte170m"), AAC, pattern=BARS), "colour",
               "BT.601 (SMPTE 170M) tags",
               tags={"color_primaries": "smpte170m", "color_trc": "smpte170m", "colorspace": "smpte170m"}),
    MatrixClip("bt709-tags", ".mp4", _simple(_tagged("bt709", "bt709", "bt709"), AAC, pattern=BARS), "colour", "BT.709 tags",
               tags={"color_primaries": "bt709", "color_trc": "bt709", "colorspace": "bt709"}),
    MatrixClip("bt2020-sdr-10bit", ".mkv", _simple(_tagged("bt2020", "bt2020-10", "bt2020nc", pix="yuv420p10le"), AAC,
                                                 pattern=BARS),
               "colour", "BT.2020 SDR 10-bit",
               tags={"color_primaries": "bt2020", "color_trc": "bt2020-10", "colorspace": "bt2020nc"}),
    MatrixClip("full-range", ".mp4", _simple(_tagged("bt709", "bt709", "bt709", rng="pc"), AAC, pattern=BARS), "colour",
               "full-range (0-255) BT.709",
               tags={"color_primaries": "bt709", "color_trc": "bt709", "colorspace": "bt709"}),
    MatrixClip("mov-qtrle-rgb", ".mov", _simple(["-c:v", "qtrle", "-pix_fmt", "rgb24"], ["-c:a", "pcm_s16le"], pattern=BARS),
               "colour", "MOV, QuickTime Animation (RGB pictures: screen recordings)",
               tags={"colorspace": "bt709"}),
    MatrixClip("mkv-ffv1-rgb", ".mkv", _simple(["-c:v", "ffv1", "-pix_fmt", "bgr0"], ["-c:a", "flac"], pattern=BARS), "colour",
               "MKV, FFV1 RGB (archival capture)", tags={"colorspace": "bt709"}),
    MatrixClip("hdr10-pq", ".mp4", _simple([*_hdr("smpte2084"), "-tag:v", "hvc1"], AAC), "colour",
               "HDR10: HEVC 10-bit BT.2020 PQ", hdr=True,
               tags={"color_primaries": "bt709", "color_trc": "bt709", "colorspace": "bt709"}),
    MatrixClip("hlg-phone", ".mov", _simple([*_hdr("arib-std-b67"), "-tag:v", "hvc1"], AAC), "colour",
               "phone HLG: HEVC 10-bit BT.2020 HLG", hdr=True,
               tags={"color_primaries": "bt709", "color_trc": "bt709", "colorspace": "bt709"}),
    # --- audio -------------------------------------------------------------------------------
    MatrixClip("no-audio", ".mp4", _simple(H264), "audio", "no audio track"),
    MatrixClip("mono-mp3", ".mp4", _audio_channels("mono", ["-c:a", "libmp3lame"]), "audio", "mono MP3 in MP4"),
    MatrixClip("surround-5.1-eac3", ".mkv", _audio_channels("5.1", ["-c:a", "eac3"]), "audio", "5.1 E-AC-3"),
    MatrixClip("surround-7.1-pcm", ".mkv", _audio_channels("7.1", ["-c:a", "pcm_s16le"]), "audio", "7.1 PCM"),
    MatrixClip("dts-5.1", ".mkv", _audio_channels("5.1", ["-c:a", "dca", "-strict", "-2"]), "audio", "DTS 5.1"),
    MatrixClip("several-tracks", ".mkv", _several_tracks, "audio", "two audio tracks (AAC + AC-3)"),
    MatrixClip("mp4-flac", ".mp4", _simple(H264, ["-c:a", "flac"]), "audio", "FLAC in MP4"),
    # --- extra streams -----------------------------------------------------------------------
    MatrixClip("cover-art-mp4", ".mp4", _cover_art("png"), "streams", "MP4 with cover art (attached picture)"),
    MatrixClip("cover-track-first-mkv", ".mkv", _cover_art("mjpeg"), "streams",
               "MKV whose first video track is a one-frame cover picture"),
    MatrixClip("subtitles-mkv", ".mkv", _subtitles, "streams", "SRT subtitle track"),
    MatrixClip("timecode-track", ".mov", _timecode_data, "streams", "timecode (tmcd data) track"),
]


# --- the reference: the ffmpeg CLI's own reading of a file ----------------------------------------


@dataclass
class Reference:
    frames: int
    first_video_s: float
    last_video_s: float
    first_audio_s: float | None


_TB = re.compile(r"^#tb (\d+): (\d+)/(\d+)")


def reference(path: Path) -> Reference:
    """Frame count and first timestamps as the ffmpeg CLI decodes them (its best-effort
    timestamps), on the file's own timeline (``-copyts``): the truth a conversion must keep."""
    out = subprocess.run(
        # ffmpeg's own choice of tracks: the largest video picture, the fullest audio track.
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-copyts", "-i", str(path), "-sn", "-dn",
         "-fps_mode", "passthrough", "-f", "framemd5", "-"],
        check=True, capture_output=True, text=True, timeout=120).stdout
    tbs, video, audio = {}, [], []
    video_index = "0"  # framemd5 lists the video first
    for line in out.splitlines():
        if m := _TB.match(line):
            tbs[int(m[1])] = Fraction(int(m[2]), int(m[3]))
        elif line and not line.startswith("#"):
            index, _dts, pts, *_ = (x.strip() for x in line.split(","))
            (video if index == video_index else audio).append(int(pts) * tbs[int(index)])
    return Reference(frames=len(video), first_video_s=float(min(video)), last_video_s=float(max(video)),
                     first_audio_s=float(min(audio)) if audio else None)
