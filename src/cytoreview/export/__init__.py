"""Export label sets (CSV/Parquet, ImageFolder crops, COCO, QuPath GeoJSON, masks) and import them back.

The exporters read only the label table (``Project.label_table()``), so they work with any DataFrame that has its
columns. :func:`export_labels` is the entry point; :func:`export_project` calls it for a project.
"""

from cytoreview.export.api import FORMATS, export_labels, export_project, parse_formats
from cytoreview.export.balance import augment_crop, balance_table, class_distribution
from cytoreview.export.filters import filter_items
from cytoreview.export.importers import import_labels, read_geojson, read_imagefolder, read_manifest
from cytoreview.export.names import safe_name, safe_names
from cytoreview.export.splits import assign_splits
from cytoreview.export.table import LABEL_TABLE_COLUMNS, validate_table

__all__ = [
    "FORMATS",
    "LABEL_TABLE_COLUMNS",
    "assign_splits",
    "augment_crop",
    "balance_table",
    "class_distribution",
    "export_labels",
    "export_project",
    "filter_items",
    "import_labels",
    "parse_formats",
    "read_geojson",
    "read_imagefolder",
    "read_manifest",
    "safe_name",
    "safe_names",
    "validate_table",
]
