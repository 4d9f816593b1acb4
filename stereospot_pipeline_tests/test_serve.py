"""`stereospot serve`: the outbox as a VR library over HTTP, as a headset's player reads it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stereospot_pipeline.serve.library import layout_of, scan
from stereospot_pipeline.serve.server import make_server
from stereospot_pipeline.stereo.params import Layout
from stereospot_pipeline_tests.clips import make_clip
from stereospot_pipeline_tests.support.net import free_port


@pytest.fixture(scope="module")
def outbox(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("outbox")
    make_clip(root / "holiday-3f9a2c_LRF_Full_SBS.mp4", seconds=1.0, size="128x48", audio=False)
    (root / "beach").mkdir()
    make_clip(root / "beach" / "waves_TB.mp4", seconds=1.0, size="64x96", audio=False)
    make_clip(root / "Dôme at dusk_180x180_3dh_LR.mp4", seconds=1.0, size="128x64", audio=False)
    (root / ".partial-x.mp4").write_bytes(b"half")  # an upload in progress is not listed
    (root / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def server(outbox):
    srv = make_server(outbox, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


def _get(server, path: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_layout_is_read_from_the_player_suffix():
    assert layout_of("a_LRF_Full_SBS.mp4") is Layout.FULL_SBS
    assert layout_of("a_LR.mp4") is Layout.HALF_SBS
    assert layout_of("a_180x180_3dh_LR.mp4") is Layout.VR180
    assert layout_of("a_TBF_fulltb.mp4") is Layout.FULL_TB
    assert layout_of("plain.mp4") is None


def test_library_lists_each_video_with_its_packing(outbox):
    entries = {e.relpath: e for e in scan(outbox)}
    assert set(entries) == {"holiday-3f9a2c_LRF_Full_SBS.mp4", "beach/waves_TB.mp4", "Dôme at dusk_180x180_3dh_LR.mp4"}
    assert (entries["holiday-3f9a2c_LRF_Full_SBS.mp4"].stereo, entries["holiday-3f9a2c_LRF_Full_SBS.mp4"].full) == ("sbs", True)
    assert (entries["beach/waves_TB.mp4"].stereo, entries["beach/waves_TB.mp4"].full) == ("tb", False)
    assert entries["Dôme at dusk_180x180_3dh_LR.mp4"].projection == "180"
    assert entries["holiday-3f9a2c_LRF_Full_SBS.mp4"].title == "holiday"
    assert 0.8 < entries["holiday-3f9a2c_LRF_Full_SBS.mp4"].duration_s < 1.3


def test_deovr_and_heresphere_documents(server):
    status, headers, body = _get(server, "/deovr")
    assert status == 200 and headers["Content-Type"] == "application/json"
    scenes = json.loads(body)["scenes"]
    videos = {v["title"]: v for v in scenes[0]["list"]}
    assert set(videos) == {"holiday", "waves", "Dôme at dusk"}
    status, _, body = _get(server, urlpath(videos["Dôme at dusk"]["video_url"]))
    dome = json.loads(body)
    assert status == 200 and dome["is3d"] and dome["stereoMode"] == "sbs" and dome["screenType"] == "dome"
    source = dome["encodings"][0]["videoSources"][0]
    # A file name with spaces and accents is percent-encoded: players fetch the URL as given.
    assert source["resolution"] == 64 and source["url"].endswith("/D%C3%B4me%20at%20dusk_180x180_3dh_LR.mp4")
    assert _get(server, urlpath(source["url"]), headers={"Range": "bytes=0-7"})[0] == 206

    status, headers, body = _get(server, "/heresphere", method="POST", body=b'{"username":"","password":""}',
                                 headers={"Content-Type": "application/json"})
    assert status == 200 and headers["HereSphere-JSON-Version"] == "1"
    urls = json.loads(body)["library"][0]["list"]
    docs = [json.loads(_get(server, urlpath(u), method="POST")[2]) for u in urls]
    by_title = {d["title"]: d for d in docs}
    assert by_title["waves"]["stereo"] == "tb" and by_title["waves"]["projection"] == "perspective"
    dome = by_title["Dôme at dusk"]
    assert dome["projection"] == "equirectangular" and dome["fov"] == 180.0 and " " not in dome["media"][0]["sources"][0]["url"]
    media = by_title["holiday"]["media"][0]["sources"][0]
    assert (media["width"], media["height"]) == (128, 48)
    status, headers, png = _get(server, urlpath(by_title["holiday"]["thumbnailImage"]))
    assert status == 200 and headers["Content-Type"] == "image/png" and png.startswith(b"\x89PNG")


def urlpath(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def test_range_requests_seek(server, outbox):
    data = (outbox / "holiday-3f9a2c_LRF_Full_SBS.mp4").read_bytes()
    doc = json.loads(_get(server, "/deovr")[2])
    url = next(v for v in doc["scenes"][0]["list"] if v["title"] == "holiday")["video_url"]
    media = urlpath(json.loads(_get(server, urlpath(url))[2])["encodings"][0]["videoSources"][0]["url"])

    status, headers, body = _get(server, media)
    assert status == 200 and body == data and headers["Accept-Ranges"] == "bytes"
    status, headers, body = _get(server, media, headers={"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200] and headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    status, headers, body = _get(server, media, headers={"Range": "bytes=-50"})
    assert status == 206 and body == data[-50:]
    status, headers, body = _get(server, media, headers={"Range": "bytes=0-"})
    assert status == 206 and body == data
    status, headers, _ = _get(server, media, headers={"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
    status, headers, body = _get(server, media, method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) == len(data)


@pytest.mark.parametrize("path", [
    "/media/../../etc/passwd", "/media/%2e%2e/%2e%2e/etc/passwd", "/../notes.txt", "/media/notes.txt",
    "/media/0000000000000000", "/thumb/..%5c..%5cetc", "/deovr/../../etc/passwd",
])
def test_nothing_outside_the_library_is_served(server, path):
    status, _, body = _get(server, path)
    assert status == 404 and b"root:" not in body


def test_read_only(server):
    for method in ("PUT", "DELETE", "PATCH"):
        status, _, _ = _get(server, "/deovr", method=method, body=b"x")
        assert status == 501


def test_serve_command_binds_loopback_and_stops_on_sigterm(tmp_path, outbox):
    port = free_port()
    env = {**os.environ, "STEREOSPOT_HOME": str(tmp_path / "home"), "STEREOSPOT_OUTBOX_URL": str(outbox)}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("stereospot")), "serve", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/deovr")
                response = conn.getresponse()
                assert response.status == 200 and len(json.loads(response.read())["scenes"][0]["list"]) == 3
                conn.close()
                break
            except ConnectionRefusedError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
                time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert f"DeoVR: http://127.0.0.1:{port}/deovr" in stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
