"""The embedded default: a simulated music service with known ground truth and an oracle."""
