"""What the depth estimator sees of an HDR picture kept HDR: an SDR BT.709 view of it.

With STEREOSPOT_HDR=keep the engine warps the PQ/HLG-coded planes as they are (the output keeps
the source's HDR), but a depth model trained on SDR video reads PQ/HLG code values as a flat,
washed-out picture. Its small analysis frames are therefore converted here the way the tone-mapped
working copy is made (media/working_copy.py TONEMAP): linear light, 100-nit reference white,
BT.2020 -> BT.709 primaries, Hable highlight roll-off, the BT.709 curve. Only the analysis frames
(a few hundred pixels a side) pay for it.
"""

from __future__ import annotations

import torch

PQ, HLG = "smpte2084", "arib-std-b67"
_REFERENCE_WHITE_NITS = 100.0
_PEAK_NITS = 1000.0  # HLG's nominal display; PQ grades are mostly mastered for 1000 nits as well
# Linear-light BT.2020 RGB -> BT.709 RGB (ITU-R BT.2087).
_BT2020_TO_709 = torch.tensor([[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]])


def _pq_nits(e: torch.Tensor) -> torch.Tensor:
    m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
    p = e.clamp(0, 1).pow(1 / m2)
    return ((p - c1).clamp_min(0) / (c2 - c3 * p)).pow(1 / m1) * 10000.0


def _hlg_nits(e: torch.Tensor) -> torch.Tensor:
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    e = e.clamp(0, 1)
    scene = torch.where(e <= 0.5, e * e / 3, (torch.exp((e - c) / a) + b) / 12)
    # The HLG OOTF for a 1000-nit display: gamma 1.2 on scene luminance.
    luma = (0.2627 * scene[:, 0:1] + 0.6780 * scene[:, 1:2] + 0.0593 * scene[:, 2:3]).clamp_min(1e-6)
    return _PEAK_NITS * scene * luma.pow(0.2)


def _hable(x: torch.Tensor) -> torch.Tensor:
    a, b, c, d, e, f = 0.15, 0.50, 0.10, 0.20, 0.02, 0.30
    return (x * (a * x + c * b) + d * e) / (x * (a * x + b) + d * f) - e / f


def sdr_view(rgb: torch.Tensor, transfer: str) -> torch.Tensor:
    """float [B,3,h,w] PQ/HLG-coded BT.2020 RGB in 0..1 -> tone-mapped BT.709 RGB in 0..1."""
    nits = _pq_nits(rgb) if transfer == PQ else _hlg_nits(rgb)
    linear = torch.einsum("ij,bjhw->bihw", _BT2020_TO_709.to(rgb), nits / _REFERENCE_WHITE_NITS).clamp_min(0)
    peak = torch.tensor(_PEAK_NITS / _REFERENCE_WHITE_NITS)
    mapped = (_hable(linear) / _hable(peak)).clamp(0, 1)
    return torch.where(mapped < 0.018, 4.5 * mapped, 1.099 * mapped.pow(0.45) - 0.099)
