from dagster import DynamicPartitionsDefinition

# One partition per video, keyed by ``ingest.partition_key`` (name slug + content hash).
videos = DynamicPartitionsDefinition(name="videos")
