"""corpusmill's processing steps: plain Python over Arrow record batches, no Beam inside.

Every step takes a `pyarrow.RecordBatch` in the document schema (`pipeline.schema`) and returns the
batch it keeps plus a `StageStats` saying what it dropped and why (`pipeline.accounting`). The Beam
jobs in `beam_jobs/` only wire these steps together.
"""
