"""A conversion recorded in Postgres-backed Dagster storage, as in production (deploy/dagster.yaml)."""

from __future__ import annotations

import psycopg2
import pytest
from dagster import AssetKey, AssetRecordsFilter, AssetsDefinition, DagsterInstance

from stereospot_pipeline.definitions import CONVERSION_ASSETS
from stereospot_pipeline_tests.clips import make_clip
from stereospot_pipeline_tests.conftest import convert


@pytest.mark.timeout(600)
def test_a_conversion_is_recorded_in_postgres(postgres_url, resources, tmp_path):
    home = tmp_path / "dagster"
    home.mkdir()
    port = postgres_url.rsplit(":", 1)[1].split("/")[0]
    # The shape of deploy/dagster.yaml. SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which
    # is not installed: dagster-postgres brings psycopg2, so the scheme names it.
    (home / "dagster.yaml").write_text(f"""
storage:
  postgres:
    postgres_db:
      hostname: 127.0.0.1
      port: {port}
      username: postgres
      db_name: postgres
      scheme: postgresql+psycopg2
telemetry:
  enabled: false
""")
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        key, result = convert(instance, resources, make_clip(tmp_path / "tiny.mp4"), segment_seconds=1.0)
        assert result.success
        run_id = result.run_id
        asset_keys = sorted({k for a in CONVERSION_ASSETS if isinstance(a, AssetsDefinition) for k in a.keys})
        assert {"source_video", "segments", "stereo_segments", "final_video"} <= {k.path[-1] for k in asset_keys}
        for asset_key in asset_keys:
            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=asset_key, asset_partitions=[key]), limit=10).records
            assert [r.run_id for r in records] == [run_id], asset_key

    # Straight from the database: the run and its materializations are rows in Postgres.
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
        assert cur.fetchone() == ("SUCCESS",)
        cur.execute("SELECT DISTINCT asset_key FROM event_logs WHERE run_id = %s AND "
                    "dagster_event_type = 'ASSET_MATERIALIZATION' AND partition = %s", (run_id, key))
        stored = sorted(AssetKey.from_db_string(row[0]) for row in cur.fetchall())
    assert stored == asset_keys
