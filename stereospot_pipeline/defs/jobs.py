from dagster import AssetSelection, define_asset_job

from stereospot_pipeline.defs.partitions import videos

# Selecting final_video selects its asset checks too: the blocking ones gate published_video.
CONVERSION_ASSETS = AssetSelection.assets("source_video", "segments", "stereo_segments", "final_video",
                                          "published_video")

convert_video = define_asset_job(
    "convert_video",
    selection=CONVERSION_ASSETS,
    partitions_def=videos,
    description="Convert one video (one `videos` partition) to stereo 3D.",
)
