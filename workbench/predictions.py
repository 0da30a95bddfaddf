# TEMPORARY shim while train/trainer.py is being edited elsewhere; removed in the same change.
from workbench.records.predictions import *  # noqa: F401,F403
from workbench.records.predictions import Predictions, to_submission  # noqa: F401
