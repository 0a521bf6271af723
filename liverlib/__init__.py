"""liverlib."""
