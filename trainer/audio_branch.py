"""The audio branch: a Siamese CNN whose audio embeddings (AE) live in the user-embedding space.

One builder, six variants (the paper's Table 1) as configurations:

| variant      | user vector              | audio inputs            | loss                                   |
|--------------|--------------------------|-------------------------|----------------------------------------|
| basic_binary | UE (frozen)              | one liked or disliked   | BCE of sigmoid(cos)                    |
| dcue_1vs1    | user-id lookup (learned) | 1 liked, 1 disliked     | cosine hinge                           |
| multi_1vs1/4 | UE (frozen)              | 1 liked, 1 / 4 disliked | softmax over cosines, categorical CE   |
| metric_1vs1/4| UE (frozen)              | 1 liked, 1 / 4 disliked | cosine hinge, Eq. 3 (the proposed one) |

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

from musicrec.audio.logmel import DEFAULT
from musicrec.trainer.similarity import cosine

VARIANTS: Dict[str, dict] = {
    "basic_binary": dict(user_vector="ue", negatives=0, loss="binary"),
    "dcue_1vs1": dict(user_vector="lookup", negatives=1, loss="hinge"),
    "multi_1vs1": dict(user_vector="ue", negatives=1, loss="softmax"),
    "multi_1vs4": dict(user_vector="ue", negatives=4, loss="softmax"),
    "metric_1vs1": dict(user_vector="ue", negatives=1, loss="hinge"),
    "metric_1vs4": dict(user_vector="ue", negatives=4, loss="hinge"),
}
LR_SCHEDULES = ("inverse_time", "cosine")
PAPER_NAMES = {
    "basic_binary": "Basic-Binary", "dcue_1vs1": "DCUE-1vs1", "multi_1vs1": "Multi-1vs1",
    "multi_1vs4": "Multi-1vs4", "metric_1vs1": "Metric-1vs1", "metric_1vs4": "Metric-1vs4",
}


@dataclasses.dataclass(frozen=True)
class AudioBranchConfig:
    user_vector: str = "ue"  # "ue": frozen user-branch UE; "lookup": learned user-id embedding (DCUE)
    negatives: int = 4  # disliked tracks per liked one; 0 = one track per example (Basic-Binary)
    loss: str = "hinge"  # "hinge" | "softmax" | "binary"
    margin: float = 0.2
    context_seconds: float = 3.0
    embedding_dim: int = 40
    conv_widths: Tuple[int, ...] = (64, 128, 128, 192, 256)
    kernel_size: int = 3
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
    seed: int = 0

    def __post_init__(self):
        if self.user_vector not in ("ue", "lookup"):
            raise ValueError(f"user_vector must be 'ue' or 'lookup', not {self.user_vector!r}")
        if self.loss not in ("hinge", "softmax", "binary"):
            raise ValueError(f"loss must be 'hinge', 'softmax' or 'binary', not {self.loss!r}")
        if (self.loss == "binary") != (self.negatives == 0):
            raise ValueError("the binary loss takes one track per example (negatives=0), and only it does")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, not {self.lr_schedule!r}")

    @classmethod
    def variant(cls, name: str, **overrides) -> "AudioBranchConfig":
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
        return cls(**{**VARIANTS[name], **overrides})

    @property
    def context_frames(self) -> int:
        return DEFAULT.num_frames(self.context_seconds)


def build_audio_encoder(config: AudioBranchConfig, n_mels: int = DEFAULT.n_mels) -> keras.Model:
    """log-mel [batch, frames, mels] -> AE [batch, embedding_dim]."""
    layers = [keras.layers.InputLayer(input_shape=(None, n_mels)), keras.layers.BatchNormalization(name="input_norm")]
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


class SiameseAudioModel(keras.Model):
    """User vector + shared audio encoder, trained with the configured loss."""

    def __init__(self, config: AudioBranchConfig, user_vectors: np.ndarray):
        super().__init__(name="siamese_audio_model")
        self.config = config
        self.encoder = build_audio_encoder(config)
        n_users = user_vectors.shape[0]
        if config.user_vector == "ue":
            self.user_vectors = keras.layers.Embedding(
                n_users, user_vectors.shape[1], embeddings_initializer=keras.initializers.Constant(user_vectors),
                trainable=False, name="user_embedding_frozen",
            )
        else:
            self.user_vectors = keras.layers.Embedding(n_users, config.embedding_dim, name="user_id_embedding")
        self.user_vectors.build((None,))
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def embed(self, log_mels: tf.Tensor, training: bool = False) -> tf.Tensor:
        shape = tf.shape(log_mels)
        flat = tf.reshape(log_mels, tf.concat([[-1], shape[-2:]], axis=0))
        embeddings = self.encoder(flat, training=training)
        return tf.reshape(embeddings, tf.concat([shape[:-2], [self.config.embedding_dim]], axis=0))

    def example_losses(self, batch, training: bool = False) -> tf.Tensor:
        users = self.user_vectors(batch["user"])
        if self.config.loss == "binary":
            return binary_loss(cosine(users, self.embed(batch["track"], training)), batch["label"])
        # Liked and disliked crops go through the encoder together: one shared network.
        n = self.config.negatives
        crops = tf.concat([batch["liked"][:, None], batch["disliked"]], axis=1)
        similarity = cosine(users, self.embed(crops, training))
        liked, disliked = similarity[:, 0], similarity[:, 1 : n + 1]
        if self.config.loss == "softmax":
            return softmax_loss(liked, disliked)
        return hinge_loss(liked, disliked, self.config.margin)

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
    """SGD with Nesterov momentum, as the paper, on the configured learning-rate schedule."""
    return keras.optimizers.SGD(learning_rate=learning_rate(config, total_steps), momentum=config.momentum,
                                nesterov=config.nesterov)
