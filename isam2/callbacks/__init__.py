"""Lightning callbacks that consume what the model's steps return (`isam2.model.batches.PaintedVideo`)."""

from isam2.callbacks.prediction_writer import PredictionWriter

__all__ = ["PredictionWriter"]
