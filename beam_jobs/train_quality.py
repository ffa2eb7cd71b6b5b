"""`corpusmill train-quality` (see beam_jobs/quality_training.py)."""
from beam_jobs.quality_training import add_train_arguments as add_arguments  # noqa: F401
from beam_jobs.quality_training import run_train as run  # noqa: F401
