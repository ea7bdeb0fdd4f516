"""Pushes the blessed models to a TF Serving base path as the three serving models."""
