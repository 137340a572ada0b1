"""Pipelines: one `run(cfg) -> dict` per task (train, evaluate, refine, score, extract); the only place that
knows the order of the stages and launches ranks. Each returns {"metrics": {name: value}, ...paths}."""
