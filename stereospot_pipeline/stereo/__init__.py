"""The stereo engine: pure torch functions, usable without Dagster.

Tensors are float32 in 0..1 with shape [B, C, H, W] unless a docstring says otherwise.
"""
