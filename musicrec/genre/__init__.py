"""Genre classification with audio embeddings: the paper's Table 2 (section 3.3).

- `datasets`: adapters that turn GTZAN (fault-filtered split), FMA-small, a
  folder-per-genre tree and a plain-layout dataset's `genre` column into one
  table of (track_id, path, genre, split);
- `features`: per-track features with a cache and progress lines: the
  track-level AE of a trained audio encoder SavedModel, and the musicnn
  baseline (`musicnn_runner` drives `musicnn_worker` in its own process);
- `table2`: the `genre-eval` job (features -> `trainer.genre` classifiers ->
  report, confusion matrices); `cli.register` adds the subcommand.
"""

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
