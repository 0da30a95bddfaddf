"""Submit stage: blend members, check, write `submissions/<name>/` (`submission`)."""
from workbench.submit.submission import SUBMISSIONS_DIR, SubmitConfig, submit

__all__ = ["SUBMISSIONS_DIR", "SubmitConfig", "submit"]
