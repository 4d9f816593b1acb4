"""Peak memory of the calling process."""

from __future__ import annotations

from pathlib import Path


def peak_rss_kb() -> int:
    """VmHWM: the peak resident set of this process's own memory. Not ``ru_maxrss``: Linux carries
    that over fork+exec, so a child of a big pytest process would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")
