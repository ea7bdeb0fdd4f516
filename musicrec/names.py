"""Names shared between layers: splits, model folders, files and signatures.

The ingestion writes what the trainers read, the trainers export what the
pusher, the serving graphs and the genre transfer load: each name they agree
on is defined once, here, in the base package (which every layer may import)
rather than repeated as literals or imported upward.
"""

# Splits of the ingestion's Examples artifacts (TFX folders `Split-<name>`).
TRAIN = "train"
EVAL = "eval"
TEST = "test"
USER_QUERIES = "user_queries"  # audio_pairs: the users whose UEs the audio branch is evaluated with


def split_folder(split: str) -> str:
    """The folder TFX writes a split's examples into, inside an Examples artifact's URI."""
    return f"Split-{split}"


# The trainers' SavedModels inside a Trainer's model artifact.
USER_TOWER_DIR = "user_tower"
RETRIEVAL_DIR = "retrieval"
AUDIO_ENCODER_DIR = "audio_encoder"
# Embedding tables written next to them.
USER_EMBEDDINGS_FILE = "user_embeddings.parquet"
TRACK_EMBEDDINGS_FILE = "track_embeddings.parquet"
# Written next to a SavedModel's assets: what the pusher and readers need to know.
MODEL_INFO_FILE = "assets.extra/musicrec_model.json"
# The audio model's per-user refined vectors (trainer/user_refinement.py), when it chose to refine:
# the serving table takes them in place of those users' UEs.
REFINED_USERS_FILE = "assets.extra/refined_user_vectors.parquet"

# Signatures of the trainers' SavedModels.
EMBED_USER_SIGNATURE = "embed_user"
RECOMMEND_SIGNATURE = "recommend_tracks"
EMBED_LOG_MEL_SIGNATURE = "embed_log_mel"
SCORE_EXAMPLES_SIGNATURE = "score_examples"  # what TFMA evaluates
# An adapted variant's UE map (UE -> the vector AEs are scored against), which the serving
# export applies to the UE table it bakes in.
ADAPT_USER_SIGNATURE = "adapt_user_embedding"


# The pair examples' track genre (the tracks table's optional `genre` column), and the value of
# a slice or genre that a row lacks.
GENRE = "genre"
UNKNOWN = "unknown"
