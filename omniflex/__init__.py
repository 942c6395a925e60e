"""omniflex: omni models trained end to end in the Flexpoint number format."""

__version__ = "0.1.0"
