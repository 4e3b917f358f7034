"""embedlens: look at image datasets through their embeddings.

>>> import embedlens as el
>>> ds = el.load_sample_dataset("mnist")
>>> ds.match(el.F("ground_truth.label") == "3").count()
"""

from . import facade  # noqa: F401  (installs the methods that reach above storage on datasets and views)
from .app import Session, launch_app
from .brain import (
    compare_datasets, compare_to_reference,
    compute_hardness, compute_mistakenness, compute_predictions, compute_similarity, compute_uniqueness,
    compute_visualization, find_exact_duplicates, propose_labels,
)
from .brain.prototypes import compute_prototypes
from .brain.centroids import compute_class_centroids
from .brain.compare_embeddings import compare_embeddings
from .display import show_grid

from .config import home
from .core.dataset import Dataset, dataset_exists, delete_dataset, list_datasets, load_dataset
from .core.expressions import F, ViewExpression
from .core.fields import FIELD_TYPES
from .core.labels import Classification, Detection, Detections, Label
from .core.errors import (
    EmbedlensError, InvalidInputError, MediaError, NotFoundError, UnknownFieldError, WrongTypeError,
)
from .core.sample import Sample
from .core import types  # el.types.ImageClassificationDirectoryTree, ... (FiftyOne's dataset type classes)
from .core.view import DatasetView
from .core.dataset import staged_dataset
from .images import ImageError
from .models import DEFAULT_MODEL, feature_extractor, from_torch, list_models, load_model
from .zoo import list_sample_datasets, load_sample_dataset

__version__ = "0.1.0"

__all__ = [
    "compare_datasets", "compare_to_reference",
    "compute_hardness", "compute_mistakenness", "compute_predictions", "compute_similarity", "compute_uniqueness",
    "compute_visualization", "find_exact_duplicates", "propose_labels",
    "compute_prototypes", "compute_class_centroids", "compare_embeddings", "show_grid",
    "Classification", "DEFAULT_MODEL", "Dataset", "DatasetView", "Detection", "Detections", "F", "FIELD_TYPES",
    "EmbedlensError", "ImageError", "InvalidInputError", "Label", "MediaError", "NotFoundError", "WrongTypeError", "Sample", "UnknownFieldError", "ViewExpression", "dataset_exists", "delete_dataset",
    "feature_extractor", "from_torch", "home", "list_datasets", "list_models", "list_sample_datasets",
    "load_dataset", "load_model", "load_sample_dataset", "staged_dataset", "Session", "launch_app", "types",
]
