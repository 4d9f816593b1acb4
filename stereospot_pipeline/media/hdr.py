"""HDR10 static metadata (SMPTE ST 2086 mastering display, CTA-861.3 content light level): read
from a decoded frame's side data, written in the encoders' own syntax.

A PQ/HLG picture kept HDR must carry these on, or players tone-map it for a guessed display
(usually 1000 or 4000 nits), brighter or darker than the grade.
"""

from __future__ import annotations

import re
import struct

import av

# libavutil: AVMasteringDisplayMetadata = display_primaries[3][2] (R, G, B), white_point[2],
# min_luminance, max_luminance (each an AVRational of two int32), has_primaries, has_luminance.
_MASTERING = struct.Struct("<20i2i")
# AVContentLightMetadata: MaxCLL, MaxFALL (unsigned, cd/m2).
_LIGHT = struct.Struct("<2I")
# x265's units: chromaticity in 1/50000, luminance in 1/10000 cd/m2.
_CHROMA, _LUMA = 50000, 10000


def frame_hdr_metadata(frame: av.VideoFrame) -> tuple[str | None, str | None]:
    """(mastering display, content light) of ``frame`` in x265's syntax
    (``G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)``, ``MaxCLL,MaxFALL``), None where the frame has none."""
    master = light = None
    for data in frame.side_data:
        kind = getattr(data.type, "name", str(data.type))
        raw = bytes(data)
        if kind == "MASTERING_DISPLAY_METADATA" and len(raw) >= _MASTERING.size:
            v = _MASTERING.unpack_from(raw)
            ratio = [v[i] / v[i + 1] if v[i + 1] else 0.0 for i in range(0, 20, 2)]
            has_primaries, has_luminance = v[20], v[21]
            if has_primaries and has_luminance:
                (rx, ry, gx, gy, bx, by, wx, wy, lo, hi) = ratio
                c = [round(x * _CHROMA) for x in (gx, gy, bx, by, rx, ry, wx, wy)]
                master = (f"G({c[0]},{c[1]})B({c[2]},{c[3]})R({c[4]},{c[5]})WP({c[6]},{c[7]})"
                          f"L({round(hi * _LUMA)},{round(lo * _LUMA)})")
        elif kind == "CONTENT_LIGHT_LEVEL" and len(raw) >= _LIGHT.size:
            cll, fall = _LIGHT.unpack_from(raw)
            light = f"{cll},{fall}"
    return master, light


def svtav1_mastering(master: str) -> str:
    """x265's mastering-display syntax -> SVT-AV1's (the same order, values as decimals)."""
    numbers = [int(n) for n in re.findall(r"\d+", master)]
    chroma = [f"{n / _CHROMA:.5f}" for n in numbers[:8]]
    return (f"G({chroma[0]},{chroma[1]})B({chroma[2]},{chroma[3]})R({chroma[4]},{chroma[5]})"
            f"WP({chroma[6]},{chroma[7]})L({numbers[8] / _LUMA:.4f},{numbers[9] / _LUMA:.4f})")
