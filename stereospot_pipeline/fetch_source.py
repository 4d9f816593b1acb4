"""Download a video from an http(s) URL, guarded against server-side request forgery.

Anyone who can launch a run can name a URL, and the download runs inside the deployment, next to
the cloud metadata endpoint (169.254.169.254) and private services. So every host is resolved
first, every address it resolves to must be public, and the connection then goes to exactly
that checked address (a second DNS answer cannot swap in another). Redirects are followed by
hand and each hop is checked again. Size is bounded before and while reading, and a web page or
other non-video answer is refused with a message saying what came back.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit

from stereospot_pipeline.errors import InvalidVideoError
from stereospot_pipeline.ingest import VIDEO_EXTENSIONS

Resolver = Callable[[str, int], list[str]]

MAX_REDIRECTS = 5
_CHUNK = 1 << 20
# Content types that cannot be a video file; anything else is tried (servers often send
# application/octet-stream or binary/octet-stream for media).
_NOT_VIDEO = re.compile(r"^(text/|application/(json|xml|xhtml|javascript|pdf)|image/)")
_TYPE_SUFFIX = {"video/mp4": ".mp4", "video/quicktime": ".mov", "video/webm": ".webm",
                "video/x-matroska": ".mkv", "video/x-msvideo": ".avi", "video/mpeg": ".mpg",
                "video/mp2t": ".ts", "video/ogg": ".ogv", "video/x-flv": ".flv", "video/3gpp": ".3gp"}
_PAGE_START = (b"<!doctype", b"<html", b"<?xml", b"{", b"<head", b"<body")


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InvalidVideoError(host, f"the host name does not resolve ({exc.strerror})",
                                "check the URL") from exc
    return sorted({info[4][0] for info in infos})


def is_public(ip: str) -> bool:
    """False for loopback, private (RFC 1918, ULA), link-local, shared (CGNAT), reserved,
    multicast and unspecified addresses, including IPv4 written inside IPv6."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address while the request keeps the URL's host name."""

    def __init__(self, host: str, port: int, ip: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to the checked address; the certificate is verified against the URL's host name."""

    def __init__(self, host: str, port: int, ip: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _checked_address(url: str, resolver: Resolver, allow_private: bool) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidVideoError(url, f"unsupported URL scheme {parts.scheme!r}", "give an http:// or https:// URL")
    if not parts.hostname:
        raise InvalidVideoError(url, "the URL has no host", "give a complete http(s) URL")
    if parts.username or parts.password:
        raise InvalidVideoError(url, "the URL carries credentials", "use a link that needs no password "
                                "(for example a presigned URL)")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolver(parts.hostname, port)
    if not addresses:
        raise InvalidVideoError(url, "the host name does not resolve", "check the URL")
    refused = [ip for ip in addresses if not is_public(ip)]
    if refused and not allow_private:
        raise InvalidVideoError(
            url, f"{parts.hostname} resolves to {refused[0]}, a private, loopback or link-local address; "
                 "refused before connecting",
            "give a public URL, or set STEREOSPOT_FETCH_ALLOW_PRIVATE=true if servers on this network are trusted")
    return parts.hostname, port, addresses[0]


def _file_name(url: str, content_type: str) -> str:
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    name = re.sub(r"[^A-Za-z0-9._ -]+", "_", name).strip(" ._")[:150]
    if PurePosixPath(name).suffix.lower() in VIDEO_EXTENSIONS:
        return name
    suffix = _TYPE_SUFFIX.get(content_type, ".mp4")
    return f"{PurePosixPath(name).stem or 'video'}{suffix}"


def download(url: str, dest_dir: Path, *, max_bytes: int, allow_private: bool = False,
             timeout_s: float = 30.0, resolver: Resolver = system_resolver) -> Path:
    """Fetch ``url`` into ``dest_dir`` (the name taken from the URL); returns the file's path.

    Raises ``InvalidVideoError`` naming the URL, the problem and what to do.
    """
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        host, port, ip = _checked_address(current, resolver, allow_private)
        parts = urlsplit(current)
        conn_cls = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        conn = conn_cls(host, port, ip, timeout_s)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            try:
                conn.request("GET", target, headers={"User-Agent": "stereospot", "Accept": "video/*, */*;q=0.5"})
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise InvalidVideoError(url, f"the download failed ({exc})", "check the URL and that the "
                                        "server is reachable") from exc
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                current = urljoin(current, response.getheader("Location"))
                continue
            if response.status != 200:
                raise InvalidVideoError(url, f"the server answered {response.status} {response.reason}",
                                        "check that the link points at the video file itself")
            return _save(url, current, response, dest_dir, max_bytes)
        finally:
            conn.close()
    raise InvalidVideoError(url, f"more than {MAX_REDIRECTS} redirects", "give the final URL of the video file")


def _save(url: str, final_url: str, response: http.client.HTTPResponse, dest_dir: Path, max_bytes: int) -> Path:
    content_type = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
    if _NOT_VIDEO.match(content_type):
        raise InvalidVideoError(url, f"the server sent {content_type}, not a video",
                                "give the direct link to the video file, not to a web page about it")
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise InvalidVideoError(url, f"the video is {int(length)} bytes, above the limit of {max_bytes} "
                                "(STEREOSPOT_FETCH_MAX_BYTES)", "raise the limit, or add the file another way")
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = _file_name(final_url, content_type)
    # A temp name, renamed once complete: a failed download never looks like a file.
    fd, tmp = tempfile.mkstemp(prefix=".download-", dir=dest_dir)
    path, done = Path(tmp), 0
    try:
        with open(fd, "wb") as out:
            first = True
            while block := response.read(_CHUNK):
                if first and block.lstrip()[:9].lower().startswith(_PAGE_START):
                    raise InvalidVideoError(url, "the server sent a web page or document, not a video",
                                            "give the direct link to the video file")
                first = False
                done += len(block)
                if done > max_bytes:
                    raise InvalidVideoError(url, f"the download passed the limit of {max_bytes} bytes "
                                            "(STEREOSPOT_FETCH_MAX_BYTES)", "raise the limit, or add the file another way")
                out.write(block)
        if done == 0:
            raise InvalidVideoError(url, "the server sent an empty file", "check the URL")
        final = dest_dir / name
        path.replace(final)
        return final
    except (OSError, http.client.HTTPException) as exc:
        path.unlink(missing_ok=True)
        raise InvalidVideoError(url, f"the download broke off after {done} bytes ({exc})",
                                "try again; check that the server is reachable") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
