"""Content digests and (later) versioned data."""
