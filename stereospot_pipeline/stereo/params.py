"""Stereo settings shared by the engine, the CLI and the Dagster run config."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, Field


class Layout(str, Enum):
    FULL_SBS = "full-sbs"
    HALF_SBS = "half-sbs"
    ANAGLYPH = "anaglyph"


class WarpMethod(str, Enum):
    BACKWARD = "backward"
    FORWARD_FILL = "forward_fill"


# Suffixes that VR players (DeoVR, Skybox, Heresphere, Virtual Desktop) read from file names.
LAYOUT_SUFFIX = {
    Layout.FULL_SBS: "_LRF_Full_SBS",
    Layout.HALF_SBS: "_LR",
    Layout.ANAGLYPH: "_redcyan",
}


class StereoParams(BaseModel):
    """How one video is turned into stereo. Defaults match common VR viewing comfort."""

    layout: Layout = Layout.FULL_SBS
    divergence: float = Field(2.0, ge=0.0, le=10.0, description="max disparity, % of the larger side")
    convergence: float = Field(0.5, ge=0.0, le=1.0, description="depth (0=far, 1=near) on the screen plane")
    method: WarpMethod = WarpMethod.BACKWARD
    depth_model: str = Field("heuristic", description="'heuristic' (weight-free) or a Depth Anything name/dir")
    depth_short_side: int = Field(224, ge=56, le=1036, description="depth inference resolution (short side)")
    batch_size: int = Field(4, ge=1, le=64)
    crf: int = Field(20, ge=0, le=51)
    preset: str = "veryfast"

    def fingerprint(self) -> str:
        """A stable id of everything that changes the output pixels (for caching segment outputs)."""
        import hashlib

        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]
