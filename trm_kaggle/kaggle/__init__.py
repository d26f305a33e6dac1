"""The on-Kaggle runtime: path discovery, the deadline, test-time fine-tuning, voting and a
submission that is valid at every moment. `submit(SubmitOptions(...))` is the whole run;
`trm-submit` and the notebook both call it."""

from trm_kaggle.kaggle.options import SubmitOptions
from trm_kaggle.kaggle.submit import Report, submit

__all__ = ["SubmitOptions", "Report", "submit"]
