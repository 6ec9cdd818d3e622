"""The command line: a thin typer layer over the library (the only place that prints)."""
