"""Practitioner baselines (popularity, musicnn + per-user LR, metadata one-hot) on the audio model's own test pairs."""
