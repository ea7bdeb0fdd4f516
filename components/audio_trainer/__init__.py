"""The audio-branch Trainer: TFX's Trainer with the log-mel features as one more input."""
