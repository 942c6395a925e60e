"""The ``omniflex`` command."""
