"""Pluggable frozen encoders whose per-masklet Eq. 3 vectors sit beside the masklets in a store (docs/encoders.md)."""

from isam2.encoders.base import (
    SAM2_ENCODER,
    Encoder,
    FrameEncoder,
    build_encoder,
    encoder_configs,
    encoder_identity,
)

__all__ = ["SAM2_ENCODER", "Encoder", "FrameEncoder", "build_encoder", "encoder_configs", "encoder_identity"]
