"""Which source frames a conversion keeps: a time window (trim) and a frame-rate cap.

Kept apart from ``media/segment.py`` (which needs PyAV) so the CLI can build its options from
``SegmentOptions`` without importing any media code.
"""

from __future__ import annotations

from fractions import Fraction

from pydantic import BaseModel, Field, model_validator


def parse_time(text: str | float) -> float:
    """Seconds from ``"90"``, ``"12.5"``, ``"1:30"`` or ``"1:02:03.5"`` (h:mm:ss)."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        parts = text.strip().split(":")
        try:
            if len(parts) > 3 or not all(parts):
                raise ValueError
            value = 0.0
            for part in parts:
                value = value * 60 + float(part)
        except ValueError:
            raise ValueError(f"{text!r} is not a time: use seconds (90, 12.5) or h:mm:ss (1:30, 1:02:03.5)") from None
    if value < 0:
        raise ValueError(f"{text!r} is before the start of the video")
    return value


class SegmentOptions(BaseModel):
    """How the source is cut into segments and which of its frames are converted."""

    # Each segment costs about 0.35 s of fixed work on 2 cores (decoding the GOP before it for the
    # lead-in, warming up on it, draining the encoder): 8% of 10 s of 576p, 4% of 20 s.
    segment_seconds: float = Field(20.0, gt=0, description="target segment length in seconds")
    start: float = Field(0.0, ge=0, description="trim: seconds from the first frame where the output "
                                                "starts (its audio starts there too)")
    end: float | None = Field(None, gt=0, description="trim: seconds from the first frame where the "
                                                      "output ends (default: the end of the video)")
    max_fps: float | None = Field(None, gt=0, description="frame-rate cap: frames dropped evenly down to "
                                                          "at most this rate, timestamps (so the duration) "
                                                          "kept; default: every frame kept")

    @model_validator(mode="after")
    def _window(self):
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end:g}s) must be after start ({self.start:g}s)")
        return self

    @property
    def selects(self) -> bool:
        """Whether some frames are left out (a trim or a frame-rate cap)."""
        return self.start > 0 or self.end is not None or self.max_fps is not None


def output_slot(t: Fraction, first: Fraction, frame_s: Fraction, max_fps: Fraction) -> int:
    """The slot of 1/max_fps seconds source time ``t`` falls in, counted in whole source frames
    from ``first``: rounding to the frame grid makes it immune to the sub-frame timestamp
    rounding of a stream copy, so the cutter, the renderer and the planner agree frame for frame."""
    n = round((t - first) / frame_s)
    return (n * frame_s * max_fps).__floor__()


def capped(times: list[Fraction], frame_s: Fraction, max_fps: float | None) -> list[bool]:
    """For presentation times in order (the first being the window's first frame): which are
    kept under the frame-rate cap (the first frame of each slot)."""
    if max_fps is None or not times:
        return [True] * len(times)
    cap = Fraction(str(max_fps))
    slots = [output_slot(t, times[0], frame_s, cap) for t in times]
    return [i == 0 or slots[i] != slots[i - 1] for i in range(len(times))]
