"""mreg's registry: migrations found in Git, planned and applied to targets."""

__version__ = "0.1.0"
