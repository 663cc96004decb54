"""Experiment capture: the journal, the shipper to MLflow, and what a tracked cell captures."""
