"""Stereo settings shared by the engine, the CLI and the Dagster run config."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator


AUTO = "auto"
# Depth inference resolution (short side) on a CPU; on CUDA each model runs at its own.
CPU_DEPTH_SHORT_SIDE = 224


class Layout(str, Enum):
    FULL_SBS = "full-sbs"
    HALF_SBS = "half-sbs"
    FULL_TB = "full-tb"
    HALF_TB = "half-tb"
    CROSS_EYED = "cross-eyed"  # right | left, for free viewing without a headset
    ANAGLYPH = "anaglyph"  # Dubois red/cyan: least ghosting, muted reds
    ANAGLYPH_COLOR = "anaglyph-color"
    ANAGLYPH_GRAY = "anaglyph-gray"
    ANAGLYPH_HALF_COLOR = "anaglyph-half-color"
    VR180 = "vr180"  # each eye projected onto a 180x180 degree equirectangular half
    DEPTH = "depth"  # debug: source frame | depth map as grey


class WarpMethod(str, Enum):
    BACKWARD = "backward"
    FORWARD_FILL = "forward_fill"


# Suffixes that VR players (DeoVR, Skybox, Heresphere, Virtual Desktop) read from file names.
# Same tags as iw3 writes, so files round-trip between the tools: `_LR`/`_TB` (half) and
# `_LRF`/`_TBF` (full) select the packing, `_180x180_3dh` an equirectangular 180-degree SBS video.
LAYOUT_SUFFIX = {
    Layout.FULL_SBS: "_LRF_Full_SBS",
    Layout.HALF_SBS: "_LR",
    Layout.FULL_TB: "_TBF_fulltb",
    Layout.HALF_TB: "_TB",
    Layout.CROSS_EYED: "_RLF_cross",
    Layout.ANAGLYPH: "_redcyan",
    Layout.ANAGLYPH_COLOR: "_redcyan",
    Layout.ANAGLYPH_GRAY: "_redcyan",
    Layout.ANAGLYPH_HALF_COLOR: "_redcyan",
    Layout.VR180: "_180x180_3dh_LR",
    Layout.DEPTH: "_debug",
}


class StereoParams(BaseModel):
    """How one video is turned into stereo. Defaults match common VR viewing comfort."""

    layout: Layout = Field(Layout.FULL_SBS, description="how the two eyes are packed into the output frame")
    divergence: Annotated[float, Field(ge=0.0, le=10.0)] | Literal["auto"] = Field(
        2.0, description="max disparity, % of the larger side; 'auto': per scene, as much as the "
                         "comfort budget allows (stereo/comfort.py)")
    convergence: Annotated[float, Field(ge=0.0, le=1.0)] | Literal["auto"] = Field(
        0.5, description="depth (0=far, 1=near) on the screen plane; 'auto': the main subject's, "
                         "smoothed over time")
    method: WarpMethod = Field(WarpMethod.FORWARD_FILL, description="view synthesis: forward_fill (splat, then fill holes; cleaner edges) or backward (one resampling pass; faster)")
    ipd_offset: float = Field(0.0, ge=-5.0, le=5.0, description="extra per-eye shift, % of the larger "
                              "side; > 0 brings the whole scene forward, < 0 pushes it back")
    synthetic_view: Literal["both", "left", "right"] = Field(
        "both", description="eye(s) rendered from depth; with 'left'/'right' the other eye is the source")
    preserve_screen_border: bool = Field(False, description="ramp the shift to 0 at the left/right "
                                         "frame edges so the frame border stays on the screen plane")
    ema_decay: float = Field(0.75, ge=0.0, lt=1.0, description="weight of history when smoothing the "
                             "depth range over time; 0 = per-frame min-max (flickers)")
    ema_lookahead: int = Field(30, ge=0, le=120, description="frames of look-ahead for the smoothing "
                               "(the converter holds this many frames back)")
    temporal_smoothing: float = Field(0.8, ge=0.0, lt=1.0, description="per pixel, weight of the "
                                      "previous frame's depth where the picture holds still (moving "
                                      "content is not smoothed); removes depth shimmer; 0 = off")
    depth_model: str = Field(AUTO, description="'auto' (the best installed learned model, else the "
                             "weight-free 'heuristic'), 'heuristic', a name from `stereospot models "
                             "list` or a folder written by save_pretrained")
    depth_short_side: int | None = Field(None, ge=56, le=1536, description="depth inference resolution "
                                         "(short side); default: the model's own on CUDA (392 for Depth "
                                         f"Anything), {CPU_DEPTH_SHORT_SIDE} on CPU")
    edge_dilation: int = Field(2, ge=0, le=8, description="grow near depth into the background at depth "
                               "edges: this many px along x, half as many along y (at depth resolution)")
    flip_tta: bool = Field(False, description="average depth with that of the mirrored frame (2x depth cost)")
    foreground_scale: float = Field(0.0, ge=-3.0, le=3.0, description="depth curve: > 0 stretches near "
                                    "depth and flattens the far, < 0 the reverse, 0 = unchanged")
    batch_size: int = Field(4, ge=1, le=64, description="frames per depth-model batch (memory vs speed)")
    crf: int = Field(20, ge=0, le=51, description="quality: lower is better and larger (x264/x265 crf, "
                     "NVENC cq; SVT-AV1 gets 1.5x on its 0..63 scale)")
    preset: str = Field("veryfast", description="encoder speed, x264 names (ultrafast .. veryslow); "
                        "mapped to SVT-AV1's numbers and NVENC's p1..p7")
    codec: Literal["auto", "h264", "hevc", "av1"] = Field(
        "auto", description="'auto': H.264 where the output fits H.264 players (media/limits.py), else HEVC; "
                            "HDR kept (STEREOSPOT_HDR=keep) needs hevc or av1")
    encoder: Literal["auto", "software", "nvenc"] = Field(
        "auto", description="'auto'/'nvenc': the NVIDIA encoder where it opens, else the software one "
                            "(the fallback is logged and recorded); 'software': libx264/libx265/libsvtav1")
    bit_depth: int = Field(8, ge=8, le=10, description="8 or 10 bits per sample (10: less banding; "
                           "H.264 10-bit plays on few devices); HDR kept is always 10")
    max_output_width: int | None = Field(None, ge=64, le=16384, description="the player's largest frame "
                                         "width: each eye is scaled down (aspect kept) until the packed "
                                         "frame fits")
    max_output_height: int | None = Field(None, ge=64, le=16384, description="the player's largest frame height")

    @field_validator("bit_depth")
    @classmethod
    def _eight_or_ten(cls, value: int) -> int:
        if value not in (8, 10):
            raise ValueError("bit_depth must be 8 or 10")
        return value

    def fingerprint(self) -> str:
        """A stable id of everything that changes the output pixels (for caching segment outputs)."""
        import hashlib

        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]
