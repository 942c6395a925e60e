"""Evaluations: Flexpoint parity experiments now; capability and safety evaluations later."""
