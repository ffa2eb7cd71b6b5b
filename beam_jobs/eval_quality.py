"""`corpusmill eval-quality` (see beam_jobs/quality_training.py)."""
from beam_jobs.quality_training import add_eval_arguments as add_arguments  # noqa: F401
from beam_jobs.quality_training import run_eval as run  # noqa: F401
