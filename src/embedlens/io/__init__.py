"""Import and export: folders of images, class trees, COCO detection JSON, CSV/Parquet tables.

>>> summary = el.io.import_samples(ds, "digits/", "classification-tree")
>>> el.io.export_samples(ds.take(10, seed=0), "/tmp/sample", "classification-tree")
"""

from .exporters import export_samples
from .importers import ImportSummary, import_samples

__all__ = ["ImportSummary", "export_samples", "import_samples"]
