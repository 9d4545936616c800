"""Tiny, randomly initialised checkpoints of the torch-based engines' models, for tests.

No weights can be downloaded here (nor in CI), so the tests build the smallest model of each
architecture with the library's own config classes, save it with ``save_pretrained`` and load
it back through the same ``from_pretrained(directory)`` path a user's local model takes. Its
forecasts are noise: tests check plumbing (shapes, bands, batching, caching), not accuracy.
Nothing here imports torch until a checkpoint is asked for.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for the Hub, even by mistake

LEVELS = [0.01, 0.05, *(q / 10 for q in range(1, 10)), 0.95, 0.99]


@functools.cache
def tiny_chronos(kind: str) -> str:
    """The directory of a random ``bolt`` (Chronos-Bolt) or ``chronos2`` (Chronos-2) model.

    Bolt forecasts 8 steps per pass, so a longer horizon exercises its autoregressive path.
    """
    import torch

    torch.manual_seed(0)
    if kind == "bolt":
        from chronos.chronos_bolt import ChronosBoltModelForForecasting
        from transformers import T5Config

        # PretrainedConfig keeps the chronos keys (its **kwargs); T5Config's signature lists none.
        config = T5Config(  # type: ignore[call-arg]
            d_model=16,
            d_ff=32,
            d_kv=8,
            num_layers=1,
            num_decoder_layers=1,
            num_heads=2,
            vocab_size=2,
            pad_token_id=0,
            eos_token_id=None,
            decoder_start_token_id=0,
            feed_forward_proj="relu",
            initializer_factor=0.05,
            architectures=["ChronosBoltModelForForecasting"],
            chronos_pipeline_class="ChronosBoltPipeline",
            chronos_config={
                "context_length": 128,
                "prediction_length": 8,
                "input_patch_size": 4,
                "input_patch_stride": 4,
                "quantiles": [q / 10 for q in range(1, 10)],
                "use_reg_token": True,
            },
        )
        model: torch.nn.Module = ChronosBoltModelForForecasting(config)
    elif kind == "chronos2":
        from chronos.chronos2 import Chronos2Model
        from chronos.chronos2.config import Chronos2CoreConfig

        config2 = Chronos2CoreConfig(
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            architectures=["Chronos2Model"],
            chronos_pipeline_class="Chronos2Pipeline",
            chronos_config={
                "context_length": 128,
                "input_patch_size": 4,
                "input_patch_stride": 4,
                "output_patch_size": 4,
                "max_output_patches": 4,
                "quantiles": LEVELS,
                "use_reg_token": True,
                "use_arcsinh": True,
            },
        )
        model = Chronos2Model(config2)
    else:
        raise ValueError(f"no tiny chronos model {kind!r}")
    path = tempfile.mkdtemp(prefix=f"tiny-{kind}-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    model.save_pretrained(path)  # type: ignore[operator]
    return path
