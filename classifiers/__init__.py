"""Classifiers used by the curation jobs (no Beam inside): the Wikipedia-vs-web quality classifier."""
