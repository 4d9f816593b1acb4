"""Sparse samples for the whole-video depth range: exact decoded pictures, spread over the video."""

from __future__ import annotations

import av
import numpy as np
import pytest

from stereospot_pipeline.media.codec import yuv420p
from stereospot_pipeline.media.sample import sample_frames
from stereospot_pipeline_tests.clips import make_clip


def _positions(samples: list[np.ndarray], path) -> list[int]:
    """Index in the fully decoded stream of the frame each sample is (byte for byte)."""
    with av.open(str(path)) as container:
        decoded = [yuv420p(f) for f in container.decode(container.streams.video[0])]
    positions = []
    for sample in samples:
        matches = [i for i, frame in enumerate(decoded) if np.array_equal(frame, sample)]
        assert matches, "a sample is not any decoded picture of the video"
        positions.append(matches[0])
    return positions


@pytest.mark.parametrize("gop, fallback", [(1000, True), (10, False)])
def test_samples_are_exact_pictures_about_a_second_apart(tmp_path, gop, fallback):
    # One keyframe in 4 s (x264 with B-frames): too few to sample keyframes only, so the
    # reference frames are decoded. A keyframe every 10 frames: keyframes alone.
    clip = make_clip(tmp_path / "clip.mp4", seconds=4.0, fps=25, size="160x96", gop=gop, audio=False)
    samples = list(sample_frames(clip, short_side=1000))
    positions = _positions(samples, clip)
    assert 3 <= len(samples) <= 5
    assert positions[0] == 0
    steps = np.diff(positions)
    assert (steps >= 25).all() and (steps <= 25 + (10 if not fallback else 4)).all(), positions
    if not fallback:
        assert all(p % 10 == 0 for p in positions)


def test_samples_are_scaled_to_the_short_side(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=2.0, fps=10, size="320x192", gop=100, audio=False)
    samples = list(sample_frames(clip, short_side=48))
    assert samples and all(s.shape == (48 * 3 // 2, 80) for s in samples)
