"""isam2: a frozen SAM2 turned into a video semantic segmentor (I-SAM2)."""
