"""Classifiers used by the curation jobs (no Beam inside): the linear quality classifier (quality_model)."""
