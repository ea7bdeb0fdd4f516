"""Artifact types of the musicrec pipeline beyond TFX's standard ones."""

from tfx.types.artifact import Artifact


class LogMelFeatures(Artifact):
    """Log-mel TFRecords keyed by track id (`musicrec.audio.records`) and their index.

    Files: `log_mel-*.tfrecord`, `index.jsonl` (track_id, frames).
    Custom properties: `extracted` and one count per quarantine status.
    """

    TYPE_NAME = "musicrec.LogMelFeatures"


class AudioQuarantine(Artifact):
    """The tracks whose audio could not be used: `quarantine.jsonl` (track_id, path, status,
    detail) and `report.md`. Custom properties: one count per status."""

    TYPE_NAME = "musicrec.AudioQuarantine"
