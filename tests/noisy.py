"""Test helper: the synthetic set's noisy base segmentor (isam2.data.synthetic), for any dataset's videos."""

from isam2.data.synthetic import noisy_video, write_noisy_base

__all__ = ["noisy_video", "write_noisy_base"]
