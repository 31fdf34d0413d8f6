"""Generation: candidates from the policy (vLLM by default, HF as fallback) and the bandit's contexts."""

from __future__ import annotations

import logging
from pathlib import Path

from laser.config import ContextConfig, EngineConfig

from .base import Candidates, GenerationEngine, GenerationError, PromptRenderer, Sample, dedupe, policy_state_dict
from .contexts import ContextEmbedder

log = logging.getLogger(__name__)

__all__ = ["Candidates", "ContextConfig", "ContextEmbedder", "EngineConfig", "GenerationEngine", "GenerationError",
           "PromptRenderer", "Sample", "dedupe", "make_embedder", "make_engine", "policy_state_dict"]


def make_engine(model_path: str | Path, config: EngineConfig | None = None) -> GenerationEngine:
    """The configured engine on the policy at `model_path`."""
    config = config or EngineConfig()
    common = dict(dtype=config.dtype, max_model_len=config.max_model_len, chat_template=config.chat_template,
                  trust_remote_code=config.trust_remote_code)
    if config.batch_size:
        common["batch_size"] = config.batch_size
    if config.engine in ("auto", "vllm"):
        try:
            from .vllm_engine import VLLMEngine

            return VLLMEngine(model_path, seed=config.seed, kv_cache_memory_bytes=config.kv_cache_mb << 20,
                              gpu_memory_utilization=config.gpu_memory_utilization,
                              tensor_parallel_size=config.tensor_parallel_size,
                              enable_prefix_caching=config.enable_prefix_caching, **common)
        except Exception as e:
            if config.engine == "vllm":
                raise GenerationError(f"vLLM could not start on {model_path}: {type(e).__name__}: {e} "
                                      "(set engine: hf to generate with transformers instead)") from e
            log.warning("vLLM could not start (%s: %s); generating with transformers (HFEngine) instead",
                        type(e).__name__, e)
    from .hf_engine import HFEngine

    return HFEngine(model_path, **common)


def make_embedder(model, tokenizer, config: ContextConfig | None = None, seed: int = 0,
                  engine: GenerationEngine | None = None) -> ContextEmbedder:
    """The configured context embedder on `model` (prompts formatted as `engine` formats them)."""
    config = config or ContextConfig()
    return ContextEmbedder(model, tokenizer, pooling=config.pooling, layer=config.layer, dim=config.dim,
                           normalize=config.normalize, frozen=config.frozen, batch_size=config.batch_size, seed=seed,
                           renderer=engine.renderer if engine is not None else None)
