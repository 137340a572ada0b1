"""A trained head and its frozen SAM2 as one object: rebuilt from a checkpoint (`parts`), segmenting streams (`stream`)."""

from isam2.segmenter.stream import SegmentedFrame, Segmenter, StreamTimes

__all__ = ["SegmentedFrame", "Segmenter", "StreamTimes"]
