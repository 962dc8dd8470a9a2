"""Calibrated lineage verdicts: see ``benchmarks/lineage/run.py``."""
