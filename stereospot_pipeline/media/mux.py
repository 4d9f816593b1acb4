"""Join encoded segments into one file and add the source's audio once (no gaps at seams)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

from stereospot_pipeline.media.packing import Packing, add_st3d
from stereospot_pipeline.media.probe import VideoInfo

# Audio codecs MP4 carries as-is; anything else is re-encoded to AAC.
_MP4_AUDIO = {"aac", "mp3", "mp3float", "ac3", "eac3", "alac", "flac", "opus"}


def concat_and_mux(segments: list[Path], source: Path, info: VideoInfo, out: Path,
                   audio_bitrate: int = 192_000, window: tuple[Fraction, Fraction | None] | None = None,
                   packing: Packing | None = None, half_sphere: bool = False) -> None:
    """Write ``out`` (MP4) from the segments' video packets plus every audio track of ``source``.

    Segments carry the source timeline counted from its first frame (``SegmentPlan.origin``), so
    packets are copied with their own timestamps shifted by the source's start: audio and video
    stay in sync however the source started, and variable frame rate survives.

    A trimmed conversion (``window``: source times of its first frame and of its end, None for
    the end of the video) counts from its first frame, and takes the audio packets (or, when
    re-encoded, the decoded audio frames) that start inside the window.

    ``packing`` (and, for VR180, the ``half_sphere`` projection) is told to players in the
    container (media/packing.py); the segments' bitstream says it already where the codec can.
    """
    zero = Fraction(info.start_time_s).limit_denominator(1_000_000)
    origin = Fraction(info.first_frame_time or 0)
    if window is not None:
        zero = origin = window[0]
    with av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
        with av.open(str(segments[0])) as first:
            vin = first.streams.video[0]
            # Opaque: the parameters are copied without looking up an encoder by the decoder's
            # name (AV1 decodes with libdav1d, which is no encoder).
            vout = dst.add_stream_from_template(vin, opaque=True)
            # The template leaves the tag to the muxer, which writes HEVC as 'hev1'; keep the
            # writer's 'hvc1' (media/codec.py), the one Apple's and the Quest's players accept.
            vout.codec_tag = vin.codec_tag
            # The encoder's container may round the first timestamp a few ticks below the source
            # start; a frame shifted below zero would be dropped by players, so start at the
            # earliest frame actually present (an offset of a fraction of a frame for audio).
            earliest = min((p.pts for p in first.demux(vin) if p.size and p.pts is not None), default=None)
            if earliest is not None:
                zero = min(zero, origin + earliest * vin.time_base)
        with av.open(str(source), metadata_errors="ignore") as src:
            plans = []
            for a in src.streams.audio:
                if a.codec_context.name in _MP4_AUDIO:
                    plans.append((a, dst.add_stream_from_template(a), None))
                else:
                    enc = dst.add_stream("aac", rate=a.codec_context.sample_rate or 48000)
                    enc.layout = layout = _encodable_layout(a.codec_context.layout)
                    enc.bit_rate = audio_bitrate
                    plans.append((a, enc, av.AudioResampler(format="fltp", layout=layout, rate=enc.rate)))
            last_dts: Fraction | None = None
            for seg in segments:
                with av.open(str(seg)) as s:
                    vin = s.streams.video[0]
                    shift = round((zero - origin) / vin.time_base)
                    for pkt in s.demux(vin):
                        if pkt.size == 0:
                            continue
                        _shift(pkt, shift)
                        last_dts = _after(pkt, last_dts, vin.time_base)
                        pkt.stream = vout
                        dst.mux(pkt)
            if plans:
                _copy_audio(src, plans, zero, dst, window)
    if packing:
        add_st3d(out, packing, half_sphere)


def _encodable_layout(layout: av.AudioLayout) -> av.AudioLayout:
    """PCM in MKV/WAV often has channels without named positions ("1 channels"), which the AAC
    encoder refuses: use the standard layout of that many channels (mono, stereo, 5.1 ...)."""
    return av.AudioLayout(f"{layout.nb_channels}c") if layout.name.endswith(" channels") else layout


def _after(pkt: av.Packet, last_dts: Fraction | None, time_base: Fraction) -> Fraction | None:
    """Keep decode times rising across a seam (as the ffmpeg CLI does): each segment's encoder
    starts its decode clock a B-frame delay before its first picture, which after a change of
    frame rate can reach back past the previous segment's last packet. Presentation times are
    untouched. -> this packet's decode time."""
    if pkt.dts is None:
        return last_dts
    if last_dts is not None and pkt.dts * time_base <= last_dts:
        pkt.dts = min(int(last_dts / time_base) + 1, pkt.pts if pkt.pts is not None else pkt.dts + 1)
    return pkt.dts * time_base


def _shift(pkt: av.Packet, ticks: int) -> None:
    if pkt.pts is not None:
        pkt.pts -= ticks
    if pkt.dts is not None:
        pkt.dts -= ticks


def _inside(ts: int | None, time_base: Fraction, window: tuple[Fraction, Fraction | None] | None) -> bool:
    if window is None:
        return True
    if ts is None:
        return False
    t = ts * time_base
    return t >= window[0] and (window[1] is None or t < window[1])


def _copy_audio(src, plans, zero: Fraction, dst, window=None) -> None:
    by_index = {a.index: (a, out, resampler) for a, out, resampler in plans}
    for pkt in src.demux([a for a, _, _ in plans]):
        a, out, resampler = by_index[pkt.stream.index]
        if resampler is None:
            if pkt.size == 0 or pkt.dts is None or not _inside(pkt.pts, a.time_base, window):
                continue
            _shift(pkt, round(zero / a.time_base))
            pkt.stream = out
            dst.mux(pkt)
            continue
        for frame in pkt.decode():
            if not _inside(frame.pts, frame.time_base or a.time_base, window):
                continue
            frame.pts = None  # the encoder numbers samples contiguously from zero
            for rframe in resampler.resample(frame):
                dst.mux(out.encode(rframe))
    for a, out, resampler in plans:
        if resampler is not None:
            for rframe in resampler.resample(None):
                dst.mux(out.encode(rframe))
            dst.mux(out.encode(None))
