"""The player-limit policy: every packed frame it plans decodes on the codec's common players."""

from __future__ import annotations

import math

import pytest

from stereospot_pipeline.media.encoders import VideoCodec
from stereospot_pipeline.media.limits import LIMITS, plan_output
from stereospot_pipeline.stereo.params import Layout


def _playable(plan) -> bool:
    limit = LIMITS[plan.codec]
    return (plan.width <= limit.max_width and plan.height <= limit.max_height
            and math.ceil(plan.width / 16) * math.ceil(plan.height / 16) <= limit.max_macroblocks)


def test_720p_and_1080p_full_sbs_stay_h264_at_full_size():
    for w, h in ((1280, 720), (1920, 1080)):
        plan = plan_output(w, h, Layout.FULL_SBS)
        assert (plan.codec, plan.width, plan.height, plan.decision) == (VideoCodec.H264, 2 * w, h, "fits")


def test_4k_full_sbs_becomes_hevc_at_full_size():
    plan = plan_output(3840, 2160, Layout.FULL_SBS)
    assert (plan.codec, plan.width, plan.height) == (VideoCodec.HEVC, 7680, 2160)
    assert "past H.264's limit" in plan.decision and not plan.scaled


def test_4k_full_sbs_asked_as_h264_is_scaled_to_fit():
    plan = plan_output(3840, 2160, Layout.FULL_SBS, VideoCodec.H264)
    assert plan.codec is VideoCodec.H264 and plan.scaled and _playable(plan)
    assert plan.width <= 4096 and plan.eye_width * 2 == plan.width
    assert abs(plan.eye_width / plan.eye_height - 16 / 9) < 0.01  # aspect kept
    assert plan.eye_width % 2 == 0 and plan.eye_height % 2 == 0


def test_the_users_own_limit_applies_on_top():
    plan = plan_output(1920, 1080, Layout.FULL_SBS, max_width=2048)
    assert plan.width <= 2048 and plan.scaled and "asked for" in plan.decision


@pytest.mark.parametrize("layout", list(Layout))
@pytest.mark.parametrize("size", [(640, 360), (3840, 2160), (7680, 4320), (4096, 4096), (1080, 1920)])
def test_every_plan_is_playable(layout, size):
    plan = plan_output(*size, layout)
    assert _playable(plan)
