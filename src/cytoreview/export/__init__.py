"""Export label sets (CSV/Parquet, ImageFolder crops, COCO, QuPath GeoJSON, masks) and import them back.

The exporters read only the label table (``Project.label_table()``), so they work with any DataFrame that has its
columns. :func:`export_labels` is the entry point; :func:`export_project` calls it for a project.
"""

from cytoreview._lazy import lazy_exports

#: Public name -> the module defining it; imported on first use, so one command imports only what it uses.
_EXPORTS = {
    "FORMATS": "cytoreview.export.api",
    "LABEL_TABLE_COLUMNS": "cytoreview.export.table",
    "assign_splits": "cytoreview.export.splits",
    "augment_crop": "cytoreview.export.balance",
    "balance_table": "cytoreview.export.balance",
    "class_distribution": "cytoreview.export.balance",
    "export_labels": "cytoreview.export.api",
    "export_project": "cytoreview.export.api",
    "filter_items": "cytoreview.export.filters",
    "import_labels": "cytoreview.export.importers",
    "parse_formats": "cytoreview.export.api",
    "read_geojson": "cytoreview.export.importers",
    "read_imagefolder": "cytoreview.export.importers",
    "read_manifest": "cytoreview.export.importers",
    "safe_name": "cytoreview.export.names",
    "safe_names": "cytoreview.export.names",
    "validate_table": "cytoreview.export.table",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
