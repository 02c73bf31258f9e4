"""The data-quality gate: Great Expectations suites over lake files, run before training.

Importing this package is cheap; Great Expectations is imported only when a gate runs.
"""

from pathlib import Path


def data_docs_index(project_root: Path) -> Path:
    """The Data Docs' index page of the GX project at `project_root/gx`."""
    return project_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
