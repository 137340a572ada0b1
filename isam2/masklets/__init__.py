"""Masklet stage: the frozen SAM2 (`sam2_backbone`), masklet sources (`generator`), Eq. 3 (`pooling`),
oracle masklets (`oracle`), and the store built from them.

Submodules are imported on demand: `isam2.masklets.sam2_backbone` and `isam2.masklets.generator` import
sam2 (safely: `import_sam2` leaves no global Hydra behind), which costs a second or two.
"""
