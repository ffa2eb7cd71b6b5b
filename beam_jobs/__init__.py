"""The commands: the CLI (`cli.py`) and one module per job, which wires the steps of `pipeline/` into a
plan or a Beam graph (the training commands call `tokenizer/`, `model/`, `classifiers/`); they hold no
processing logic."""
