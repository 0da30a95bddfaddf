"""Score stage: a written submission against the data set's sealed truth (`sealed`)."""
from workbench.score.sealed import detect_format, read_submission, score_submission, sealed_ground_truth

__all__ = ["detect_format", "read_submission", "score_submission", "sealed_ground_truth"]
