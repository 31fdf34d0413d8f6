"""Generation: candidates from the policy (vLLM by default, HF as fallback) and the bandit's contexts."""

from __future__ import annotations

import logging
from pathlib import Path

from laser.config import ContextConfig, EngineConfig

from .base import Candidates, GenerationEngine, GenerationError, PromptRenderer, Sample, dedupe, policy_state_dict
from .contexts import ContextEmbedder

log = logging.getLogger(__name__)

__all__ = ["Candidates", "ContextConfig", "ContextEmbedder", "EngineConfig", "GenerationEngine", "GenerationError",
           "PromptRenderer", "Sample", "dedupe", "make_embedder", "make_engine", "policy_state_dict",
           "vllm_unavailable"]


def vllm_unavailable() -> str | None:
    """Why vLLM cannot run here (not installed, or no platform it supports), or None when it can."""
    try:
        import vllm  # noqa: F401
        from vllm.platforms import current_platform
    except Exception as e:  # noqa: BLE001 - an install that cannot import (missing or broken) is the same answer
        return f"vllm cannot be imported ({type(e).__name__}: {e})"
    if current_platform.is_unspecified():
        return "vllm supports no device of this machine"
    return None


def make_engine(model_path: str | Path, config: EngineConfig | None = None,
                device: str | None = None) -> GenerationEngine:
    """The configured engine on the policy at `model_path` (`device`: where the transformers engine runs; vLLM
    places itself). `engine: auto` takes transformers only where vLLM cannot run at all (the reason logged); a vLLM
    that fails to start is an error that says which setting to change."""
    config = config or EngineConfig()
    common = dict(dtype=config.dtype, max_model_len=config.max_model_len, chat_template=config.chat_template,
                  trust_remote_code=config.trust_remote_code, sleep=config.sleep)
    if config.batch_size:
        common["batch_size"] = config.batch_size
    if config.engine in ("auto", "vllm"):
        why = vllm_unavailable()
        if why is None:
            from .vllm_engine import VLLMEngine

            return VLLMEngine(model_path, seed=config.seed, kv_cache_memory_bytes=config.kv_cache_mb << 20,
                              gpu_memory_utilization=config.gpu_memory_utilization,
                              tensor_parallel_size=config.tensor_parallel_size,
                              enable_prefix_caching=config.enable_prefix_caching, weight_sync=config.weight_sync,
                              extra=config.extra, **common)
        if config.engine == "vllm":
            raise GenerationError(f"engine: vllm, but {why}; install it (the cpu or gpu extra) or set engine: hf")
        log.warning("%s; generating with transformers (HFEngine) instead", why)
    from .hf_engine import HFEngine

    return HFEngine(model_path, device=device, **common)


def make_embedder(model, tokenizer, config: ContextConfig | None = None, seed: int = 0,
                  engine: GenerationEngine | None = None) -> ContextEmbedder:
    """The configured context embedder on `model` (prompts formatted as `engine` formats them)."""
    config = config or ContextConfig()
    return ContextEmbedder(model, tokenizer, pooling=config.pooling, layer=config.layer, dim=config.dim,
                           normalize=config.normalize, frozen=config.frozen, batch_size=config.batch_size, seed=seed,
                           renderer=engine.renderer if engine is not None else None)
