"""Listening-data ingestion: the plain layout (or any adapter's tables) -> tf.Examples for both branches."""
