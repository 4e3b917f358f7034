"""The brain: what the geometry of the embeddings says about a dataset.

Every method takes ``embeddings=`` (an array or a stored set's name) or ``model=``, works on samples or,
with ``patches_field``, on objects, and records a brain run under ``brain_key``.
"""

from .neighbors import KnnGraph, knn_graph
from .runs import BrainResults
from .source import EmbeddingSource, resolve_embeddings

__all__ = ["BrainResults", "EmbeddingSource", "KnnGraph", "knn_graph", "resolve_embeddings"]
