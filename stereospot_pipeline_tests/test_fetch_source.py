"""Adding a video by URL: downloads from a real loopback server, size limits, non-video answers,
and the server-side request forgery guard (private and link-local addresses refused before any
connection; tested with a stubbed resolver, no traffic ever goes to such an address)."""

from __future__ import annotations

import socket

import pytest

from stereospot_pipeline import fetch_source
from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.fetch_source import download, is_public
from stereospot_pipeline.ingest import registry_key
from stereospot_pipeline.library import add_source
from stereospot_pipeline.settings import Settings
from stereospot_pipeline_tests.clips import make_clip
from stereospot_pipeline_tests.support.http import Answer, loopback_http

MIB = 1 << 20


@pytest.fixture
def no_connections(monkeypatch):
    """Any connection attempt fails the test."""
    def refuse(address, *args, **kwargs):
        raise AssertionError(f"a connection to {address} was attempted")
    monkeypatch.setattr(fetch_source.socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory) -> bytes:
    return make_clip(tmp_path_factory.mktemp("clip") / "c.mp4", seconds=1.0, size="96x64").read_bytes()


def test_download_from_a_server_keeps_the_name_and_bytes(tmp_path, clip_bytes):
    with loopback_http({"/media/Garden%20Walk.mp4": Answer(clip_bytes)}) as server:
        path = download(f"{server.url}/media/Garden%20Walk.mp4", tmp_path / "in", max_bytes=MIB, allow_private=True)
    assert path.name == "Garden Walk.mp4" and path.read_bytes() == clip_bytes
    assert [p.name for p in (tmp_path / "in").iterdir()] == ["Garden Walk.mp4"]


def test_a_name_without_a_video_suffix_takes_one_from_the_content_type(tmp_path, clip_bytes):
    with loopback_http({"/watch?v=42": Answer(clip_bytes, content_type="video/webm")}) as server:
        path = download(f"{server.url}/watch?v=42", tmp_path, max_bytes=MIB, allow_private=True)
    assert path.name == "watch.webm"


@pytest.mark.parametrize("addresses", [
    ["169.254.169.254"],                 # the cloud metadata endpoint (link-local)
    ["10.0.0.5"], ["192.168.1.10"], ["172.16.3.4"],   # private networks
    ["127.0.0.1"], ["::1"],              # loopback
    ["fd00::1"], ["fe80::1"],            # IPv6 unique-local and link-local
    ["::ffff:169.254.169.254"],          # IPv4 written inside IPv6
    ["100.64.0.1"], ["0.0.0.0"],         # shared (CGNAT), unspecified
    ["93.184.216.34", "10.1.2.3"],       # one private answer among public ones is enough
])
def test_private_and_link_local_addresses_are_refused_before_connecting(tmp_path, no_connections, addresses):
    with pytest.raises(InvalidVideoError) as caught:
        download("http://videos.example/v.mp4", tmp_path, max_bytes=MIB, resolver=lambda host, port: addresses)
    message = str(caught.value)
    assert "http://videos.example/v.mp4" in message and "refused before connecting" in message
    assert "STEREOSPOT_FETCH_ALLOW_PRIVATE" in message
    assert not list(tmp_path.iterdir())


def test_public_addresses_pass_the_check():
    assert all(is_public(ip) for ip in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"))


def test_a_redirect_to_the_metadata_endpoint_is_refused(tmp_path, monkeypatch):
    """Each hop is resolved and checked again: a public server cannot bounce the download to an
    internal address. The 'public' server is the loopback one, reached by rerouting the socket."""
    with loopback_http({"/v.mp4": Answer(b"", status=302,
                                         headers={"Location": "http://metadata.internal/latest/meta-data/"})}) as server:
        port = int(server.url.rsplit(":", 1)[1])
        dns = {"cdn.example": ["93.184.216.34"], "metadata.internal": ["169.254.169.254"]}
        real_connect, connected = socket.create_connection, []

        def reroute(address, *args, **kwargs):
            connected.append(address)
            assert address == ("93.184.216.34", port), f"connection to {address}"
            return real_connect(("127.0.0.1", port), *args, **kwargs)

        monkeypatch.setattr(fetch_source.socket, "create_connection", reroute)
        with pytest.raises(InvalidVideoError, match="metadata.internal resolves to 169.254.169.254"):
            download(f"http://cdn.example:{port}/v.mp4", tmp_path, max_bytes=MIB,
                     resolver=lambda host, _: dns[host])
    assert connected == [("93.184.216.34", port)] and server.requests == ["/v.mp4"]


def test_size_limits_before_and_while_reading(tmp_path):
    big = b"\x00" * (2 * MIB)
    with loopback_http({"/declared.mp4": Answer(big), "/streamed.mp4": Answer(big, send_length=False)}) as server:
        with pytest.raises(InvalidVideoError, match="above the limit of 1048576"):
            download(f"{server.url}/declared.mp4", tmp_path, max_bytes=MIB, allow_private=True)
        with pytest.raises(InvalidVideoError, match="passed the limit of 1048576 bytes"):
            download(f"{server.url}/streamed.mp4", tmp_path, max_bytes=MIB, allow_private=True)
    assert not list(tmp_path.iterdir())  # no partial download left behind


def test_web_pages_and_errors_are_refused_with_what_came_back(tmp_path):
    page = b"<!DOCTYPE html><html><body>a video page</body></html>"
    with loopback_http({"/page": Answer(page, content_type="text/html; charset=utf-8"),
                        "/disguised.mp4": Answer(page, content_type="application/octet-stream")}) as server:
        with pytest.raises(InvalidVideoError, match="sent text/html, not a video"):
            download(f"{server.url}/page", tmp_path, max_bytes=MIB, allow_private=True)
        with pytest.raises(InvalidVideoError, match="web page or document"):
            download(f"{server.url}/disguised.mp4", tmp_path, max_bytes=MIB, allow_private=True)
        with pytest.raises(InvalidVideoError, match="answered 404"):
            download(f"{server.url}/missing.mp4", tmp_path, max_bytes=MIB, allow_private=True)
    assert not list(tmp_path.iterdir())


def test_adding_a_url_registers_the_download_once(tmp_path, resources, clip_bytes):
    settings = Settings(home=tmp_path / "home", fetch_allow_private=True)
    store = resources["store"]
    junk = b"\x17" * 5000
    with loopback_http({"/a/holiday.mp4": Answer(clip_bytes), "/junk.mp4": Answer(junk)}) as server:
        key = add_source(store, f"{server.url}/a/holiday.mp4", settings)
        assert add_source(store, f"{server.url}/a/holiday.mp4", settings) == key
        with pytest.raises(InvalidVideoError) as caught:
            add_source(store, f"{server.url}/junk.mp4", settings)
        assert f"{server.url}/junk.mp4" in str(caught.value) and "not a readable video" in str(caught.value)
        # The default refuses loopback: the tests opt in above.
        with pytest.raises(InvalidVideoError, match="refused before connecting"):
            add_source(store, f"{server.url}/a/holiday.mp4", Settings(home=tmp_path / "home"))
    reg = store.get_json(registry_key(key))
    assert key.startswith("holiday-") and reg["name"] == "holiday.mp4"
    downloads = store.list_keys("downloads")
    assert downloads == [f"downloads/{key}/source.mp4"] and reg["uri"] == store.location(downloads[0])
