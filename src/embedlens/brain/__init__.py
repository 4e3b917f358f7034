"""The brain: what the geometry of the embeddings says about a dataset.

Every method takes ``embeddings=`` (an array or a stored set's name) or ``model=`` (see
:func:`resolve_embeddings`), works on samples or, with ``patches_field``, on objects, and follows one
contract (:mod:`embedlens.brain.contract`): its run is recorded with every argument and can be redone
with :func:`rerun`.
"""

from .contract import METHODS, rerun

from .compare import ComparisonResults, compare_datasets, compare_to_reference

from .hardness import HardnessResults, compute_hardness
from .mistakenness import MistakennessResults, compute_mistakenness
from .neighbors import KnnGraph, knn_graph
from .predictions import PredictionResults, compute_predictions
from .proposals import ProposalResults, propose_labels
from .duplicates import find_exact_duplicates
from ..core.runs import BrainResults
from .similarity import SimilarityIndex, compute_similarity, load_similarity_index, sort_by_similarity
from .source import EmbeddingSource, resolve_embeddings
from .uniqueness import UniquenessResults, compute_uniqueness
from .visualization import VisualizationResults, compute_visualization
from .prototypes import PrototypeResults, compute_prototypes
from .centroids import CentroidResults, compute_class_centroids
from .compare_embeddings import EmbeddingComparison, compare_embeddings

__all__ = [
    "BrainResults", "EmbeddingSource", "HardnessResults", "KnnGraph", "MistakennessResults", "PredictionResults",
    "ProposalResults", "SimilarityIndex", "UniquenessResults", "VisualizationResults", "compute_similarity",
    "compute_uniqueness", "find_exact_duplicates", "load_similarity_index", "sort_by_similarity", "compute_hardness", "compute_mistakenness", "compute_predictions",
    "compute_visualization", "PrototypeResults", "compute_prototypes", "CentroidResults", "compute_class_centroids", "EmbeddingComparison", "compare_embeddings", "knn_graph", "propose_labels", "resolve_embeddings", "METHODS", "rerun",
    "ComparisonResults", "compare_datasets", "compare_to_reference",
]
