"""Fetch the real-world corpus listed in ``manifest.tsv`` into a cache folder.

usage: python -m stereospot_pipeline_tests.corpus.fetch [DEST]   (default: ./.real-clips)

Prints one absolute path per clip. Each package is downloaded once with ``apt-get download``
(no root, no install) and unpacked with ``dpkg-deb -x`` into a temporary folder; clips already
in DEST are kept, so re-runs cost nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MANIFEST = Path(__file__).with_name("manifest.tsv")


def manifest() -> list[tuple[str, str, str]]:
    """(local name, Debian package, path inside the package) per clip."""
    rows = []
    for line in MANIFEST.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, package, inner = line.split("\t")
            rows.append((name, package, inner))
    return rows


def _download(package: str, debs: Path) -> Path:
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[0]
    if shutil.which("apt-get") is None:
        raise RuntimeError("fetching the real-world corpus needs apt-get (a Debian-based machine)")
    attempt = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
    if attempt.returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update"], capture_output=True, check=False)
        attempt = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if attempt.returncode != 0 or not found:
        raise RuntimeError(f"could not download Debian package {package}: {attempt.stderr.strip()}")
    return found[0]


def fetch(dest: Path) -> dict[str, Path]:
    """Every clip of the manifest in ``dest``, by local name."""
    dest = dest.resolve()
    debs = dest / ".debs"
    debs.mkdir(parents=True, exist_ok=True)
    clips = {}
    for name, package, inner in manifest():
        out = dest / name
        if not (out.is_file() and out.stat().st_size):
            deb = _download(package, debs)
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
                partial = out.with_name(f".{name}.partial")
                shutil.copyfile(Path(tmp) / inner.lstrip("/"), partial)
                partial.replace(out)
        clips[name] = out
    return clips


if __name__ == "__main__":
    for path in fetch(Path(sys.argv[1] if len(sys.argv) > 1 else ".real-clips").resolve()).values():
        print(path)
