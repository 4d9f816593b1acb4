"""A film of tens of GB registers: the inbox sensor hashes it chunk by chunk across ticks (the
digests so far in its cursor), every door computes the same content id, and the CLI shows
progress while it hashes. Sparse files (``truncate``): no real disk is used."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest
from dagster import build_sensor_context

from stereospot_pipeline import ingest
from stereospot_pipeline.definitions import build_definitions
from stereospot_pipeline.defs import inbox as inbox_module
from stereospot_pipeline.defs.inbox import LocalInbox, inbox_sensor
from stereospot_pipeline.defs.partitions import videos
from stereospot_pipeline.ingest import CHUNK_BYTES, content_id, file_sha256, partition_key

GB = 1 << 30


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
    past = time.time() - 120  # settled: not still being copied in
    os.utime(path, (past, past))
    return path


def _ticks(instance, settings, resources, inbox_dir: Path, limit: int):
    """Ticks until one requests a run: (that result, seconds of each tick, cursors seen)."""
    defs = build_definitions(settings)
    inbox = LocalInbox(path=str(inbox_dir), settle_seconds=2.0)
    cursor, durations, cursors = None, [], []
    for _ in range(limit):
        started = time.monotonic()
        context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                       resources={"store": resources["store"], "inbox": inbox})
        result = inbox_sensor(context)
        durations.append(time.monotonic() - started)
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        cursor = result.cursor
        cursors.append(cursor)
        if result.run_requests:
            return result, durations, cursors
    raise AssertionError(f"not registered within {limit} ticks")


def test_a_50_gb_file_registers_across_ticks_with_a_slow_read(instance, settings, resources, monkeypatch):
    """Reading is stubbed slow (a disk, not the page cache): each tick stops inside the file at
    its budget, the next one continues from the digests in the cursor, and the id equals the one
    hashed in one go (the CLI's)."""
    real_chunk = ingest._chunk_sha256
    reads = []

    def slow_chunk(fh):
        reads.append(fh.tell())
        time.sleep(0.002)
        fh.seek(CHUNK_BYTES, os.SEEK_CUR)  # a 50 GB file of zeros would cost ~40 s of CPU
        return hashlib.sha256(str(fh.tell()).encode()).hexdigest()

    monkeypatch.setattr(ingest, "_chunk_sha256", slow_chunk)
    monkeypatch.setattr(inbox_module, "_TICK_BUDGET_SECONDS", 0.5)
    inbox_dir = settings.resolved_home / "inbox"
    inbox_dir.mkdir(parents=True)
    film = _sparse(inbox_dir / "Feature Film.mkv", 50 * GB)
    result, durations, cursors = _ticks(instance, settings, resources, inbox_dir, limit=40)
    chunks = -(-film.stat().st_size // CHUNK_BYTES)
    assert len(durations) >= 3, "hashing 50 GB slowly should take several ticks"
    # Each tick ends at its budget (plus one chunk and the tick's own work on a busy machine).
    assert max(durations) < 0.5 + 2.5, durations
    assert sorted(reads) == reads and len(reads) == chunks, "every chunk is read once, in order, across ticks"
    assert '"Feature Film.mkv": [' in cursors[0] and "null" in cursors[0]  # part-hashed, kept in the cursor
    key = result.run_requests[0].partition_key
    reads.clear()
    assert key == partition_key(film.name, file_sha256(film))  # the id hashed in one go agrees
    assert instance.get_dynamic_partitions(videos.name) == [key]
    monkeypatch.setattr(ingest, "_chunk_sha256", real_chunk)


def test_a_sparse_file_of_tens_of_gb_registers_with_real_hashing(instance, settings, resources, monkeypatch):
    """Real reads of a 6 GB sparse file under a 1 s budget (zeros still cost sha256 CPU, ~5-20 s
    here): several ticks, then the content id of 6 GB of zeros, computed here independently
    from one chunk's digest."""
    monkeypatch.setattr(inbox_module, "_TICK_BUDGET_SECONDS", 1.0)
    inbox_dir = settings.resolved_home / "inbox"
    inbox_dir.mkdir(parents=True)
    size = 6 * GB
    film = _sparse(inbox_dir / "zeros.mp4", size)
    result, durations, _ = _ticks(instance, settings, resources, inbox_dir, limit=30)
    assert len(durations) >= 2 and max(durations) < 1.0 + 3.0, durations
    zeros = hashlib.sha256(bytes(CHUNK_BYTES)).hexdigest()
    expected = content_id([zeros] * (size // CHUNK_BYTES))
    assert result.run_requests[0].partition_key == partition_key(film.name, expected)


def test_cli_shows_progress_while_hashing_a_large_file(tmp_path):
    """`stereospot convert` of a 1 GB file: a hashing progress line, then a clear error naming the
    file (zeros are no video), and the source untouched."""
    big = _sparse(tmp_path / "big.mp4", 1 * GB)
    exe = Path(os.environ.get("VIRTUAL_ENV", Path(__file__).resolve().parents[1] / ".venv")) / "bin" / "stereospot"
    env = {**os.environ, "STEREOSPOT_HOME": str(tmp_path / "home")}
    done = subprocess.run([str(exe), "convert", str(big), "--depth-model", "heuristic"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode != 0
    assert "hashing big.mp4" in done.stderr and "1.1 GB" in done.stderr, done.stderr[-2000:]
    assert "big.mp4" in (done.stderr + done.stdout).split("hashing big.mp4", 1)[1]
    assert big.stat().st_size == GB


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES, CHUNK_BYTES + 1])
def test_content_id_resumes_at_any_chunk_boundary(tmp_path, size):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(min(size, 1 << 16)) + bytes(max(size - (1 << 16), 0)))
    whole = file_sha256(path)
    digests: list[str] = []
    calls = 1
    while not ingest.hash_chunks(path, digests, deadline=time.monotonic() - 1):  # one chunk per call
        calls += 1
        assert calls <= 3
    assert calls == max(len(digests), 1)
    assert content_id(digests) == whole
    assert len(digests) == -(-size // CHUNK_BYTES)
