"""`corpusmill eval-quality` (see beam_jobs/quality.py)."""
from beam_jobs.quality import add_eval_arguments as add_arguments  # noqa: F401
from beam_jobs.quality import run_eval as run  # noqa: F401
