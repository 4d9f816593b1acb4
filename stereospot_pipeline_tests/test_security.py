"""No shell strings, untrusted names confined to the storage roots, partition keys sanitised,
secrets never logged. (The deployed UI's authentication: test_deploy_cdk.py asserts that no ALB
listener forwards to the webserver without authenticating first.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from stereospot_pipeline.ingest import partition_key
from stereospot_pipeline.storage import LocalObjectStore, check_key
from stereospot_pipeline_tests.clips import REPO, make_clip
from stereospot_pipeline_tests.conftest import convert

HOSTILE_KEYS = [
    "../escape", "a/../../escape", "/etc/passwd", "a//b", "./a", "a/./b", "a/..", "..", "", ".hidden",
    "a\\..\\..\\escape", "a/\x00b", "a/\nb", "~/x", "a/" + "x" * 201, "-rf", "a/ b",
]
HOSTILE_NAMES = [
    "../../etc/passwd.mp4", "/abs/path.mov", "$(rm -rf ~).mp4", "`id`;|&.mkv", "x" * 5000 + ".mp4",
    "ünïcødé 🎥.webm", "a,b|c.mp4", "\x00\n\t.mp4", "....mp4", "CON.mp4", "'\"quotes\".mp4", "",
]


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_no_shell_strings_in_the_package():
    offenders = []
    for path in sorted((REPO / "stereospot_pipeline").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for call, name in _calls(tree):
            where = f"{path.relative_to(REPO)}:{call.lineno} {name}"
            if name in ("os.system", "os.popen", "os.spawnlp", "commands.getoutput"):
                offenders.append(where)
            if name.startswith("subprocess.") or name in ("Popen", "run", "check_call", "check_output"):
                if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                       for k in call.keywords):
                    offenders.append(f"{where}: shell=")
                if name.startswith("subprocess.") and call.args and isinstance(call.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
                    offenders.append(f"{where}: command given as a string")
    assert offenders == []


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_check_key_rejects_keys_that_could_escape(key):
    with pytest.raises(ValueError, match="unsafe storage key"):
        check_key(key)


def test_the_local_store_never_touches_anything_outside_its_root(tmp_path):
    root = tmp_path / "root"
    store = LocalObjectStore(root=str(root))
    (tmp_path / "escape").write_bytes(b"outside")
    for key in HOSTILE_KEYS:
        for op in (lambda: store.put_bytes(b"x", key), lambda: store.get_bytes(key), lambda: store.delete(key),
                   lambda: store.exists(key), lambda: store.put_file(tmp_path / "escape", key)):
            with pytest.raises(ValueError):
                op()
    assert (tmp_path / "escape").read_bytes() == b"outside"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["escape"]  # the root was never even created
    store.put_bytes(b"ok", "a/b.json")
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()] == ["escape", "root/a/b.json"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_partition_keys_from_hostile_names_are_safe_and_bounded(name):
    key = partition_key(name, "0123456789abcdef" * 4)
    assert re.fullmatch(r"[a-z0-9_-]+", key) and len(key) <= 51
    assert key.endswith("-0123456789")
    check_key(f"registry/{key}.json")


MARKER = "SECRET-MARKER-7f3a9c1e"


def test_secrets_from_the_environment_never_reach_logs(instance, resources, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", MARKER)
    monkeypatch.setenv("AWS_SESSION_TOKEN", MARKER)
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.5)
    _, result = convert(instance, resources, clip)
    assert result.success
    records = instance.get_records_for_run(result.run_id, limit=100_000).records
    assert len(records) > 50
    for record in records:
        entry = record.event_log_entry
        assert MARKER not in (entry.user_message or "") and MARKER not in str(entry.dagster_event or "")
    # Everything the run printed, and every file of the instance (event log, compute logs, runs).
    captured = capfd.readouterr()
    assert MARKER not in captured.out + captured.err
    for path in Path(instance.root_directory).rglob("*"):
        if path.is_file():
            assert MARKER.encode() not in path.read_bytes(), path
