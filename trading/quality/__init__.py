"""The data-quality gate: Great Expectations suites over lake files, run before training.

Importing this package is cheap; Great Expectations is imported only when a gate runs.
"""
