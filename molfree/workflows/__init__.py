"""End-to-end jobs behind the CLI; each writes a run directory with results, plots and a report."""
