"""embedlens: look at image datasets through their embeddings.

>>> import embedlens as el
>>> ds = el.load_sample_dataset("mnist")
>>> ds.match(el.F("ground_truth.label") == "3").count()
"""

from .config import home
from .core.dataset import Dataset, dataset_exists, delete_dataset, list_datasets, load_dataset
from .core.expressions import F, ViewExpression
from .core.fields import FIELD_TYPES
from .core.labels import Classification, Detection, Detections, Label
from .core.query import UnknownFieldError
from .core.sample import Sample
from .core.view import DatasetView
from .images import ImageError

__version__ = "0.1.0"

__all__ = [
    "Classification", "Dataset", "DatasetView", "Detection", "Detections", "F", "FIELD_TYPES", "ImageError",
    "Label", "Sample", "UnknownFieldError", "ViewExpression", "dataset_exists", "delete_dataset", "home",
    "list_datasets", "load_dataset",
]
