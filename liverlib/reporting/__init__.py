"""Reporting: the paper's figures (one module per notebook), the run's tables, the slice viewer."""
