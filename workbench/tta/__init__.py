"""Test-time augmentation: reversible views and the specs that choose them per task."""
from workbench.tta.spec import TaskTTA, TTASpec, flip_tta, multiscale_tta, parse_tta, ten_crop_tta
from workbench.tta.views import Compose, FiveCrop, HFlip, Scale, View, compose, list_views, register_view

__all__ = ["Compose", "FiveCrop", "HFlip", "Scale", "TTASpec", "TaskTTA", "View", "compose", "flip_tta",
           "list_views", "multiscale_tta", "parse_tta", "register_view", "ten_crop_tta"]
