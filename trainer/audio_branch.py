"""The audio branch: a Siamese CNN whose audio embeddings (AE) live in the user-embedding space.

One builder (`AudioBranchConfig` + `SiameseAudioModel`); the paper's six
Table 1 models and the later variants are configurations of it:

| variant               | user vector              | audio inputs            | loss                                   |
|-----------------------|--------------------------|-------------------------|----------------------------------------|
| basic_binary          | UE (frozen)              | one liked or disliked   | BCE of sigmoid(cos)                    |
| dcue_1vs1             | user-id lookup (learned) | 1 liked, 1 disliked     | cosine hinge                           |
| multi_1vs1/4          | UE (frozen)              | 1 liked, 1 / 4 disliked | softmax over cosines, categorical CE   |
| metric_1vs1/4         | UE (frozen)              | 1 liked, 1 / 4 disliked | cosine hinge, Eq. 3 (the proposed one) |
| metric_1vs4_adapted   | UE -> trainable map      | 1 liked, 4 disliked     | cosine hinge                           |
| contrastive_1vs4      | UE (frozen)              | 1 liked, 4 disliked     | InfoNCE over every track in the batch  |
| metric_1vs4_augmented | UE (frozen)              | as Metric-1vs4, log-mels with random gain and EQ tilt | cosine hinge |
| metric_1vs4_hard      | UE (frozen)              | 1 liked, 4 disliked + 4 mined in the batch | cosine hinge        |
| metric_1vs4_refined   | UE, then refined per user on its training pairs | 1 liked, 4 disliked | cosine hinge  |
| metric_1vs4_genre     | as metric_1vs4_refined   | 1 liked, 4 disliked     | cosine hinge + 2 x genre softmax on the AE |
| metric_1vs4_genre_musicnn | as metric_1vs4_genre | musicnn patch features  | as metric_1vs4_genre; Adam             |
| metric_1vs4_genre_msd_mtt | as metric_1vs4_genre | musicnn MSD + MTT patch features | as metric_1vs4_genre; Adam    |
| metric_1vs4_genre_msd_mtt_max_mean | as metric_1vs4_genre | as above, max and mean pools | as metric_1vs4_genre; Adam |

Each later variant changes one thing of Metric-1vs4, so each is measured
against it; they combine as configuration fields (e.g. `variant("contrastive_1vs4",
user_vector="adapted_ue", augment=True)`). Every variant exports the same
serving graph: the front end's frames -> AE, scored by cosine against a UE
table (the adapted variant's table is the UEs through its map:
`SiameseAudioModel.adapt`).

The front end (`front_end`, `musicrec.audio.front_ends`) is what the encoder
reads: log-mel frames under the CNN below, or musicnn's pretrained features
per 3 s patch (frozen; of its MSD model, or of its MSD and MTT models
concatenated) under a small dense head.

The genre head (`class_weight`) is a training signal only: a linear softmax
over the training tracks' genre (the pair examples' `genre` column) on the
unit AE, which pulls tracks of one genre together in the metric space, so new
releases land near the music they resemble. It is not exported: serving still
needs audio alone. A dataset without genres trains without it.

The encoder (shared by every input, so the network is Siamese) follows DCUE's
public model: 1-D convolutions over time with the 128 mel bins as channels.
Input batch normalisation (per mel bin) replaces a hand-set dB scaling. Then 5
blocks of Conv1D (kernel 3, 'same') + batch norm + ReLU + max-pool 2, widths
64-128-128-192-256 (the receptive field grows to ~1 s of audio; a 3 s crop
of 130 frames leaves 4 steps after 5 poolings); global average pooling over
time so any context duration works (3 s or 10 s); and a final linear
Dense(40): ReLU after every layer but the embedding, as the paper. About
330k parameters.

Optimiser as the paper: SGD, learning rate 0.1, Nesterov momentum 0.9,
learning-rate decay 1e-6 per step (lr / (1 + 1e-6 * step)); optionally a cosine
decay over the training budget, and early stopping on the validation AUC.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import musicrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras

from musicrec.audio import front_ends
from musicrec.trainer.similarity import cosine

VARIANTS: Dict[str, dict] = {
    "basic_binary": dict(user_vector="ue", negatives=0, loss="binary"),
    "dcue_1vs1": dict(user_vector="lookup", negatives=1, loss="hinge"),
    "multi_1vs1": dict(user_vector="ue", negatives=1, loss="softmax"),
    "multi_1vs4": dict(user_vector="ue", negatives=4, loss="softmax"),
    "metric_1vs1": dict(user_vector="ue", negatives=1, loss="hinge"),
    "metric_1vs4": dict(user_vector="ue", negatives=4, loss="hinge"),
    # Issue 12's candidates, each Metric-1vs4 with one change.
    "metric_1vs4_adapted": dict(user_vector="adapted_ue", negatives=4, loss="hinge"),
    "contrastive_1vs4": dict(user_vector="ue", negatives=4, loss="infonce"),
    "metric_1vs4_augmented": dict(user_vector="ue", negatives=4, loss="hinge", augment=True),
    "metric_1vs4_hard": dict(user_vector="ue", negatives=4, loss="hinge", hard_negatives=4),
    "metric_1vs4_refined": dict(user_vector="ue", negatives=4, loss="hinge", refine_users=True),
    # class_weight 2: of 0.5, 1, 2 and 4 measured on every robustness world (docs/robustness.md),
    # the best for new releases of overlapping styles, within ~0.01 of 0.5 elsewhere.
    "metric_1vs4_genre": dict(user_vector="ue", negatives=4, loss="hinge", refine_users=True, class_weight=2.0),
    # The same objective on a pretrained front end: musicnn's frozen MSD features per 3 s patch
    # under a small trainable head (Adam, as a head on fixed features trains; docs/robustness.md).
    "metric_1vs4_genre_musicnn": dict(user_vector="ue", negatives=4, loss="hinge", refine_users=True, class_weight=2.0,
                                      front_end="musicnn", optimizer="adam", learning_rate=1e-3),
}
# The same head on both of musicnn's models (MSD and MagnaTagATune tags), concatenated per patch.
VARIANTS["metric_1vs4_genre_msd_mtt"] = dict(VARIANTS["metric_1vs4_genre_musicnn"], front_end="musicnn_msd_mtt")
# ... and each model's mean_pool beside its max_pool (docs/robustness.md: measured on some worlds only).
VARIANTS["metric_1vs4_genre_msd_mtt_max_mean"] = dict(VARIANTS["metric_1vs4_genre_musicnn"],
                                                     front_end="musicnn_msd_mtt_max_mean")
LR_SCHEDULES = ("inverse_time", "cosine")
OPTIMIZERS = ("sgd", "adam")
USER_VECTORS = ("ue", "adapted_ue", "lookup")
LOSSES = ("hinge", "softmax", "binary", "infonce")
PAPER_NAMES = {
    "basic_binary": "Basic-Binary", "dcue_1vs1": "DCUE-1vs1", "multi_1vs1": "Multi-1vs1",
    "multi_1vs4": "Multi-1vs4", "metric_1vs1": "Metric-1vs1", "metric_1vs4": "Metric-1vs4",
}
VARIANT_NAMES = {  # how reports name every variant: the paper's names, then the later ones
    **PAPER_NAMES, "metric_1vs4_adapted": "Metric-1vs4 + UE adapter", "contrastive_1vs4": "Contrastive-1vs4",
    "metric_1vs4_augmented": "Metric-1vs4 + augmentation", "metric_1vs4_hard": "Metric-1vs4 + hard negatives",
    "metric_1vs4_refined": "Metric-1vs4 + user refinement",
    "metric_1vs4_genre": "Metric-1vs4 + user refinement + genre head",
    "metric_1vs4_genre_musicnn": "Metric-1vs4 + user refinement + genre head, musicnn front end",
    "metric_1vs4_genre_msd_mtt": "Metric-1vs4 + user refinement + genre head, musicnn MSD + MTT front end",
    "metric_1vs4_genre_msd_mtt_max_mean": "Metric-1vs4 + user refinement + genre head, musicnn MSD + MTT max and mean pools",
}
EXCLUDED_LOGIT = -1e9  # a candidate left out of a softmax or of the mining (exp underflows to 0)
# The genre head scores unit AEs: cosines in [-1, 1] times this scale (temperature 0.1), so
# the softmax can become confident.
CLASS_LOGIT_SCALE = 10.0


@dataclasses.dataclass(frozen=True)
class AudioBranchConfig:
    # "ue": the user branch's UE, frozen; "adapted_ue": the frozen UE through a trainable linear
    # map (identity at the start) trained with the audio loss, applied to every UE, new users'
    # too; "lookup": a learned user-id embedding (DCUE).
    user_vector: str = "ue"
    negatives: int = 4  # disliked tracks per liked one; 0 = one track per example (Basic-Binary)
    loss: str = "hinge"  # "hinge" | "softmax" | "binary" | "infonce"
    margin: float = 0.2
    # InfoNCE (Ferraro et al. 2021): softmax of cosine / temperature over every track in the batch,
    # the example's own liked one the target; tracks the user liked in training are left out.
    temperature: float = 0.1
    # Extra negatives per example: the in-batch tracks (other examples' crops) the user's vector
    # scores highest among those the user did not like in training.
    hard_negatives: int = 0
    # Random gain and EQ tilt on every training crop's log-mel (dB ranges, each +/-; the tilt is
    # the change from the lowest to the highest mel bin). Time shift is the random crop itself.
    augment: bool = False
    augment_gain_db: float = 6.0
    augment_tilt_db: float = 6.0
    context_seconds: float = 3.0
    embedding_dim: int = 40
    # What the encoder reads (`musicrec.audio.front_ends`): "log_mel" frames under the CNN below,
    # or "musicnn" / "musicnn_msd_mtt": pretrained, frozen musicnn features per 3 s patch (of
    # the MSD model, or of the MSD and the MTT model concatenated) under a small dense head.
    front_end: str = "log_mel"
    conv_widths: Tuple[int, ...] = (64, 128, 128, 192, 256)
    kernel_size: int = 3
    head_units: int = 256  # the musicnn head: dropout, Dense(head_units, ReLU), dropout, Dense(embedding_dim)
    head_dropout: float = 0.2
    optimizer: str = "sgd"  # "sgd" (the paper's, with momentum below) | "adam"
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    lr_decay: float = 1e-6
    # "inverse_time": the paper's lr / (1 + lr_decay * step); "cosine": cosine decay from
    # learning_rate to 1% of it over the whole budget (epochs x steps), which with early
    # stopping lets the step size follow the data's budget instead of a fixed decay.
    lr_schedule: str = "inverse_time"
    batch_size: int = 32
    epochs: int = 10  # the most epochs; early stopping may end sooner
    steps_per_epoch: Optional[int] = None  # None: one pass over the liked training pairs (scales with the data)
    # Early stopping on the validation pairs' AUC, checked after every epoch; the weights of the
    # best epoch are restored. 0 turns it off (train every epoch, keep the last weights).
    early_stopping_patience: int = 0
    # After training, move each user's vector toward their own training pairs in AE space
    # (trainer/user_refinement.py; its strength, none included, chosen on the validation pairs).
    refine_users: bool = False
    # Weight of the genre head's loss beside the ranking loss (0: no head). Its logits are a
    # linear map of the unit AE times CLASS_LOGIT_SCALE (a cosine classifier).
    class_weight: float = 0.0
    # The most memory the training log-mels may take (float16, padded per block). Larger
    # features are read from their shards in blocks of at most this size (trainer/log_mel_shards.py),
    # with each liked track's negatives among the user's disliked tracks of its block.
    log_mel_memory_mb: float = 4096.0
    seed: int = 0

    def __post_init__(self):
        for field, value, allowed in (("user_vector", self.user_vector, USER_VECTORS), ("loss", self.loss, LOSSES),
                                      ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
                                      ("optimizer", self.optimizer, OPTIMIZERS),
                                      ("front_end", self.front_end, tuple(front_ends.FRONT_ENDS))):
            if value not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, not {value!r}")
        if (self.loss == "binary") != (self.negatives == 0) and self.loss != "infonce":
            raise ValueError("the binary loss takes one track per example (negatives=0), and only it does")
        if self.hard_negatives and self.loss in ("binary", "infonce"):
            raise ValueError("hard_negatives adds negatives to the hinge or softmax loss; the binary loss has none "
                             "and InfoNCE already scores every track in the batch")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, not {self.temperature}")
        if self.class_weight and self.loss == "binary":
            raise ValueError("the genre head (class_weight) is trained beside the triplet losses, not the binary one")
        if self.augment and self.front_end != "log_mel":
            raise ValueError("augment draws gain and EQ tilt on log-mel crops; the musicnn front end's features are not log-mels")
        self.context_frames  # a context the front end cannot cut is an error now, not at training

    @classmethod
    def variant(cls, name: str, **overrides) -> "AudioBranchConfig":
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
        return cls(**{**VARIANTS[name], **overrides})

    @property
    def context_frames(self) -> int:
        return front_ends.front_end(self.front_end).num_frames(self.context_seconds)

    @property
    def needs_liked_mask(self) -> bool:
        """Whether training scores other examples' tracks, and so must know which ones each user liked."""
        return self.loss == "infonce" or self.hard_negatives > 0


def build_audio_encoder(config: AudioBranchConfig) -> keras.Model:
    """The front end's frames [batch, frames, frame_dim] -> AE [batch, embedding_dim]."""
    if isinstance(front_ends.front_end(config.front_end), front_ends.MusicnnFrontEnd):
        return _build_feature_head(config)
    return _build_cnn(config)


def _build_cnn(config: AudioBranchConfig) -> keras.Model:
    """log-mel [batch, frames, mels]: the DCUE-style CNN described in the module docstring."""
    layers = [keras.layers.InputLayer(input_shape=(None, front_ends.LOG_MEL_FRONT_END.frame_dim)),
              keras.layers.BatchNormalization(name="input_norm")]
    for i, width in enumerate(config.conv_widths):
        layers += [
            keras.layers.Conv1D(width, config.kernel_size, padding="same", use_bias=False, name=f"conv{i + 1}"),
            keras.layers.BatchNormalization(name=f"bn{i + 1}"),
            keras.layers.ReLU(name=f"relu{i + 1}"),
            keras.layers.MaxPool1D(2, padding="same", name=f"pool{i + 1}"),
        ]
    layers += [
        keras.layers.GlobalAveragePooling1D(name="time_pool"),
        keras.layers.Dense(config.embedding_dim, name="audio_embedding"),  # no ReLU: the embedding layer
    ]
    return keras.Sequential(layers, name="audio_encoder")


def _build_feature_head(config: AudioBranchConfig) -> keras.Model:
    """Pretrained patch features [batch, patches, dim] -> AE: one small MLP per patch (batch norm
    of the inputs, as the CNN's, then dropout, a ReLU layer, dropout, the linear embedding),
    averaged over the patches. The features are fixed, so only this head trains: a minute's work
    where the CNN takes ten, and what a pretrained front end needs to join the metric space."""
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=(None, front_ends.front_end(config.front_end).frame_dim)),
        keras.layers.BatchNormalization(name="input_norm"),
        keras.layers.Dropout(config.head_dropout, name="input_dropout"),
        keras.layers.Dense(config.head_units, activation="relu", name="hidden"),
        keras.layers.Dropout(config.head_dropout, name="hidden_dropout"),
        keras.layers.Dense(config.embedding_dim, name="audio_embedding"),  # no ReLU: the embedding layer
        keras.layers.GlobalAveragePooling1D(name="time_pool"),
    ], name="audio_encoder")


def hinge_loss(liked: tf.Tensor, disliked: tf.Tensor, margin: float) -> tf.Tensor:
    """Eq. 3 per example: sum_i max(0, margin - cos(u, r+) + cos(u, r-_i)). liked [B], disliked [B, n]."""
    return tf.reduce_sum(tf.nn.relu(margin - liked[:, None] + disliked), axis=1)


def softmax_loss(liked: tf.Tensor, disliked: tf.Tensor) -> tf.Tensor:
    """Categorical cross-entropy of a softmax over [cos(u, r+), cos(u, r-_1..n)], the liked one the target."""
    logits = tf.concat([liked[:, None], disliked], axis=1)
    return -tf.nn.log_softmax(logits, axis=1)[:, 0]


def binary_loss(similarity: tf.Tensor, label: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy of sigmoid(cos(u, r)) against liked (1) / disliked (0)."""
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=label, logits=similarity)


def infonce_loss(batch_similarity: tf.Tensor, liked_by: tf.Tensor, tracks_per_example: int,
                 temperature: float) -> tf.Tensor:
    """InfoNCE per example over every track in the batch.

    batch_similarity [B, B * m]: cos(user of example b, track c), tracks in
    example order (example b's liked track at column b * m, then its m - 1
    disliked ones); liked_by [B, B * m]: the user liked track c in training.
    The target is the example's own liked track; the user's other liked
    tracks are left out (not negatives), every other track is one.
    """
    targets = tf.range(tf.shape(batch_similarity)[0]) * tracks_per_example
    own = tf.one_hot(targets, tf.shape(batch_similarity)[1], on_value=True, off_value=False)
    logits = tf.where(liked_by & ~own, EXCLUDED_LOGIT, batch_similarity / temperature)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def hardest_negatives(batch_similarity: tf.Tensor, liked_by: tf.Tensor, tracks_per_example: int, count: int) -> tf.Tensor:
    """[B, count]: the highest cosines of each example's user with the batch's other examples'
    tracks that the user did not like in training (mining; the example's own tracks are already in
    its loss). Fewer candidates than `count` (a tiny last batch) give fewer negatives."""
    batch = tf.shape(batch_similarity)[0]
    own = tf.repeat(tf.eye(batch, dtype=tf.bool), tracks_per_example, axis=1)
    candidates = tf.where(liked_by | own, EXCLUDED_LOGIT, batch_similarity)
    return tf.math.top_k(candidates, k=tf.minimum(count, tf.shape(candidates)[1])).values


class SiameseAudioModel(keras.Model):
    """User vector + shared audio encoder, trained with the configured loss."""

    def __init__(self, config: AudioBranchConfig, user_vectors: np.ndarray, track_classes: Optional[np.ndarray] = None):
        """`track_classes`: each stored track's class (genre) index, -1 where unknown; the genre head
        is built when the configuration weighs it and some class is known."""
        super().__init__(name="siamese_audio_model")
        self.config = config
        self.encoder = build_audio_encoder(config)
        self.class_head = None
        if config.class_weight and track_classes is not None and (track_classes >= 0).any():
            self.track_classes = tf.constant(track_classes, tf.int32)
            self.class_head = keras.layers.Dense(int(track_classes.max()) + 1, use_bias=False, name="genre_head")
        n_users = user_vectors.shape[0]
        if config.user_vector == "lookup":
            self.user_vectors = keras.layers.Embedding(n_users, config.embedding_dim, name="user_id_embedding")
        else:
            self.user_vectors = keras.layers.Embedding(
                n_users, user_vectors.shape[1], embeddings_initializer=keras.initializers.Constant(user_vectors),
                trainable=False, name="user_embedding_frozen",
            )
        self.user_vectors.build((None,))
        self.adapter = None
        if config.user_vector == "adapted_ue":
            # A linear map that starts as the identity: training begins from the paper's frozen UEs.
            self.adapter = keras.layers.Dense(user_vectors.shape[1], kernel_initializer="identity", name="user_adapter")
            self.adapter.build((None, user_vectors.shape[1]))
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def adapt(self, vectors: tf.Tensor) -> tf.Tensor:
        """UEs -> the vectors AEs are scored against (the identity without an adapter)."""
        return vectors if self.adapter is None else self.adapter(vectors)

    def user_table(self) -> np.ndarray:
        """Every user's vector as scored: the (adapted) UEs, or the learned id embeddings (DCUE)."""
        return self.adapt(self.user_vectors.embeddings).numpy()

    def embed(self, log_mels: tf.Tensor, training: bool = False) -> tf.Tensor:
        shape = tf.shape(log_mels)
        flat = tf.reshape(log_mels, tf.concat([[-1], shape[-2:]], axis=0))
        embeddings = self.encoder(flat, training=training)
        return tf.reshape(embeddings, tf.concat([shape[:-2], [self.config.embedding_dim]], axis=0))

    def example_losses(self, batch, training: bool = False) -> tf.Tensor:
        users = self.adapt(self.user_vectors(batch["user"]))
        config = self.config
        if config.loss == "binary":
            return binary_loss(cosine(users, self.embed(batch["track"], training)), batch["label"])
        # Liked and disliked crops go through the encoder together: one shared network.
        crops = tf.concat([batch["liked"][:, None], batch["disliked"]], axis=1)
        tracks = self.embed(crops, training)  # [B, 1 + n, d]
        if config.needs_liked_mask:  # every user against every track of the batch
            batch_similarity = cosine(users, tf.reshape(tracks, [-1, config.embedding_dim]), all_pairs=True)
            if config.loss == "infonce":
                return infonce_loss(batch_similarity, batch["liked_by"], 1 + config.negatives, config.temperature)
        similarity = cosine(users, tracks)
        liked, disliked = similarity[:, 0], similarity[:, 1:]
        if config.hard_negatives:
            mined = hardest_negatives(batch_similarity, batch["liked_by"], 1 + config.negatives, config.hard_negatives)
            disliked = tf.concat([disliked, mined], axis=1)
        ranking = softmax_loss(liked, disliked) if config.loss == "softmax" else hinge_loss(liked, disliked, config.margin)
        if self.class_head is None:
            return ranking
        return ranking + config.class_weight * self.class_losses(tracks, batch["rows"])

    def class_losses(self, tracks: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
        """Per example: the genre head's cross-entropy, averaged over its tracks of known genre.
        tracks: AEs [B, 1 + n, d]; rows: their stored tracks [B, 1 + n]."""
        labels = tf.gather(self.track_classes, rows)
        logits = self.class_head(tf.math.l2_normalize(tracks, axis=-1) * CLASS_LOGIT_SCALE)
        known = tf.cast(labels >= 0, tf.float32)
        entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(labels, 0), logits) * known
        return tf.reduce_sum(entropy, axis=1) / tf.maximum(tf.reduce_sum(known, axis=1), 1.0)

    def train_step(self, batch):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(self.example_losses(batch, training=True))
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]


def learning_rate(config: AudioBranchConfig, total_steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """The configured schedule: the paper's lr / (1 + decay * step) (the classic Keras `decay`
    argument, as a schedule), or a cosine decay over `total_steps`."""
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(total_steps, 1), alpha=0.01)
    return keras.optimizers.schedules.InverseTimeDecay(config.learning_rate, decay_steps=1, decay_rate=config.lr_decay)


def build_optimizer(config: AudioBranchConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """SGD with Nesterov momentum, as the paper, or Adam, on the configured learning-rate schedule."""
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate(config, total_steps))
    return keras.optimizers.SGD(learning_rate=learning_rate(config, total_steps), momentum=config.momentum,
                                nesterov=config.nesterov)
