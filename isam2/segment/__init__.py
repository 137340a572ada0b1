"""Segment stage: masklet classes -> semantic maps (compose), and the SAM2 refiner of any prediction (refine: per frame or per track)."""
