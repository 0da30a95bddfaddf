"""Predict stage: a run's predictions on a split under a TTA spec, cached (`cache`), and the
comparison of TTA views on val (`compare`)."""
from workbench.predict.cache import PredictConfig, cache_dir, cache_entry, predict_run
from workbench.predict.compare import compare_tta

__all__ = ["PredictConfig", "cache_dir", "cache_entry", "predict_run", "compare_tta"]
