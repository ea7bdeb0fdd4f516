"""Audio features: decode, resample and first-30-s log-mel per track, with a quarantine for unusable audio."""
