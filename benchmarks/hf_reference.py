"""What the benchmarks share: the Hugging Face T5 they compare against, and the machine's name."""

from __future__ import annotations

import os
import platform


def untied_t5(config):
    """``T5ForConditionalGeneration(config)`` with an LM head of its own; returns (model, was_tied).

    transformers 5 ties a T5 model's ``lm_head`` to the shared embedding in
    memory even when the config says ``tie_word_embeddings=False``; T5 1.1 (and
    t5x_lite's model of it) has a separate head, so the tie is undone here.
    """
    import torch
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration(config)
    was_tied = model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()
    if was_tied:
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    return model, was_tied


def cpu_model() -> str:
    """The CPU's model name, e.g. ``Intel(R) Xeon(R) Processor``."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def cpu_name() -> str:
    """Model name and core count, e.g. ``Intel(R) Xeon(R) Processor, 2 cores``."""
    return f"{cpu_model()}, {os.cpu_count()} cores"
