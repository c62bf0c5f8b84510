"""Datasette plugins that `mreg serve` loads with ``--plugins-dir`` (every module here is one)."""
