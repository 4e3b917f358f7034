"""Datasets, samples, labels, fields and views: the storage layer everything else reads."""
