"""Embeddings: computed in batches while threads decode, stored as one matrix per set, reused."""

from .compute import apply_model, compute_embeddings, compute_patch_embeddings, get_embeddings, set_embeddings
from ..core.embeddings import EmbeddingMismatchError, EmbeddingSet, check_matrix

__all__ = ["EmbeddingMismatchError", "EmbeddingSet", "apply_model", "check_matrix", "compute_embeddings",
           "compute_patch_embeddings", "get_embeddings", "set_embeddings"]
