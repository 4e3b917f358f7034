"""Import and export: folders of images, class trees, COCO detection JSON, CSV/Parquet tables."""
