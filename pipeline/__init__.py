"""The main job: the whole NBMF platform end to end on one machine (``python -m pipeline``)."""
