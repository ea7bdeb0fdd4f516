"""Audio decoding and the log-mel front end shared by training features and serving."""
