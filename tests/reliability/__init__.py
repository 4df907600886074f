"""Reliability regression tests (issue 15): one module per area."""
