"""Leaderboard submission formats: a registry of writers/readers, plus validation.

Importing this package registers the built-in formats ("allinone-json", "coco").
"""
from workbench.formats import allinone as _allinone  # noqa: F401  (registers "allinone-json")
from workbench.formats import coco as _coco  # noqa: F401  (registers "coco")
from workbench.formats.base import SubmissionFormat, get_format, list_formats, register_format
from workbench.formats.polygons import mask_to_polygons, polygon_roundtrip_miou, polygons_to_mask
from workbench.formats.validate import validate_submission

__all__ = [
    "SubmissionFormat", "register_format", "get_format", "list_formats",
    "validate_submission", "mask_to_polygons", "polygons_to_mask", "polygon_roundtrip_miou",
]
