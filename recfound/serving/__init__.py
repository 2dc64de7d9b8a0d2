"""Serving recommendations: the catalogue a model carries, its ANN index, the recommend request
(semantic identifiers live in :mod:`recfound.data.semantic_ids`)."""
