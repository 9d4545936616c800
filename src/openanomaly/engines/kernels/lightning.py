"""What the Lightning-based engines (NeuralForecast, Darts' torch models) share: a trainer that
prints nothing and writes nothing, and Lightning's INFO chatter ("Seed set", "GPU available:
False"...) and two warnings about the libraries' own internals kept out of a service's log.
Lightning is not imported here."""

from __future__ import annotations

import logging
import warnings

QUIET_TRAINER = {
    "accelerator": "cpu",
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "logger": False,
    "enable_checkpointing": False,
}
"""Lightning Trainer options every engine starts from (a pipeline's params may override)."""


_INTERNAL_WARNINGS = (
    # pytorch_lightning's own use of torch's pytree API (a deprecation inside Lightning).
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # NeuralForecast hands torch a read-only view of its own frame; it never writes to it.
    r"The given NumPy array is not writable",
)


def quiet_lightning() -> None:
    """Raise Lightning's loggers to WARNING (they log at INFO on every fit and predict), and
    ignore the warnings about library internals that a user can do nothing about."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in _INTERNAL_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


__all__ = ["QUIET_TRAINER", "quiet_lightning"]
