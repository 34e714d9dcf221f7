"""portkit's command line: a thin client of the Python API."""
