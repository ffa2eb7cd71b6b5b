"""Beam wiring of the steps in `pipeline/`: these modules build graphs; they hold no processing logic."""
