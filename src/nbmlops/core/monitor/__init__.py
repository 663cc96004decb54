"""Monitoring of served models: drift, data quality and mergeable profiles of live traffic,
performance (realized and estimated) and service health."""
