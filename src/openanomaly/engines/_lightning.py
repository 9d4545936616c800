"""What the Lightning-based engines (NeuralForecast, Darts' torch models) share: a trainer that
prints nothing and writes nothing, and Lightning's INFO chatter ("Seed set", "GPU available:
False"...) kept out of a service's log. Lightning is not imported here."""

from __future__ import annotations

import logging

QUIET_TRAINER = {
    "accelerator": "cpu",
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "logger": False,
    "enable_checkpointing": False,
}
"""Lightning Trainer options every engine starts from (a pipeline's params may override)."""


def quiet_lightning() -> None:
    """Raise Lightning's loggers to WARNING (they log at INFO on every fit and predict)."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


__all__ = ["QUIET_TRAINER", "quiet_lightning"]
