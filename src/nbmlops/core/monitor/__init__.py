"""Monitoring of served models: drift, data quality, performance and service health."""
