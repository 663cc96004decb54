"""Model registry on MLflow: versions, aliases, gates, roles, cards, safety checks."""
