"""`VLLMEngine`: an in-process `vllm.LLM` on the policy directory, with in-place weight sync.

vLLM runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so that `sync_weights` can hand the
trainer's tensors to the model runner's `reload_weights` directly: no save to disk, no restart. On CPU
the KV cache is a fixed number of bytes of RAM (`kv_cache_memory_bytes`; the fraction-of-memory knob
reserves a share of *all* RAM there); on GPU the usual `gpu_memory_utilization`, `tensor_parallel_size`
and prefix caching apply.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from pathlib import Path

import torch

from .base import GenerationEngine, Sample, SamplingSettings, policy_state_dict

log = logging.getLogger(__name__)


def llm_kwargs(model_path, gpu: bool, dtype: str = "auto", max_model_len: int | None = None, seed: int = 0,
               kv_cache_memory_bytes: int | None = 64 << 20, gpu_memory_utilization: float = 0.5,
               tensor_parallel_size: int = 1, enable_prefix_caching: bool = True, enforce_eager: bool | None = None,
               trust_remote_code: bool = False) -> dict:
    """The `vllm.LLM` arguments for a GPU or a CPU machine."""
    kwargs: dict = dict(model=str(model_path), dtype=dtype if dtype != "auto" else ("bfloat16" if gpu else "float32"),
                        seed=seed, trust_remote_code=trust_remote_code,
                        enforce_eager=(not gpu) if enforce_eager is None else enforce_eager,
                        enable_prefix_caching=enable_prefix_caching)
    if max_model_len:
        kwargs["max_model_len"] = max_model_len
    if gpu:
        kwargs.update(gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size)
    else:
        if kv_cache_memory_bytes:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_memory_bytes)
        # vLLM 0.32 on CPU: a seeded request whose prefill is split across steps makes the model runner
        # rewind its torch.Generator, which CPU generators cannot do ("CPU Generator does not use
        # offset"), and the engine dies. Whole prefills avoid it.
        kwargs["enable_chunked_prefill"] = False
    return kwargs


class VLLMEngine(GenerationEngine):
    """Sampling and greedy decoding with vLLM; `sync_weights` pushes a trainer's weights in place."""

    name = "vllm"

    def __init__(self, model_path: str | Path, dtype: str = "auto", max_model_len: int | None = None,
                 chat_template: str = "auto", batch_size: int = 1024, seed: int = 0,
                 kv_cache_memory_bytes: int | None = 64 << 20, gpu_memory_utilization: float = 0.5,
                 tensor_parallel_size: int = 1, enable_prefix_caching: bool = True, enforce_eager: bool | None = None,
                 trust_remote_code: bool = False, **engine_kwargs):
        # In-process engine core: required for in-place weight sync (tensors cannot cross the process pipe).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        kwargs = llm_kwargs(model_path, gpu=torch.cuda.is_available(), dtype=dtype, max_model_len=max_model_len,
                            seed=seed, kv_cache_memory_bytes=kv_cache_memory_bytes,
                            gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                            enable_prefix_caching=enable_prefix_caching, enforce_eager=enforce_eager,
                            trust_remote_code=trust_remote_code)
        kwargs.update(engine_kwargs)  # anything else vllm.LLM accepts (max_num_seqs, quantization, ...)
        threads = torch.get_num_threads()
        self.llm = LLM(**kwargs)
        # vLLM's CPU worker lowers torch's (process-wide) thread count to leave a core to a separate server
        # process; in-process, that would only slow down the trainer that shares this process.
        torch.set_num_threads(threads)
        tokenizer = self.llm.get_tokenizer()
        super().__init__(model_path, tokenizer, self.llm.llm_engine.model_config.max_model_len, chat_template,
                         batch_size)

    def _generate(self, prompt_ids: list[list[int]], settings: SamplingSettings,
                  batch_index: int) -> list[list[Sample]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            n=settings.n, temperature=settings.temperature, top_p=settings.top_p, max_tokens=settings.max_new_tokens,
            stop=list(settings.stop) or None, seed=None if settings.seed is None else settings.seed + batch_index,
            logprobs=0,  # the sampled token's own log-probability, for the cumulative sum
        )
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False)
        groups = []
        for out in outputs:
            groups.append([Sample(c.text, tuple(c.token_ids), "length" if c.finish_reason == "length" else "stop",
                                  c.cumulative_logprob) for c in out.outputs])
        return groups

    def sync_weights(self, model) -> float:
        t0 = time.perf_counter()
        weights = list(policy_state_dict(model).items())
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()  # cached prefixes hold activations of the old weights
        self.stats.weight_syncs += 1
        return time.perf_counter() - t0

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception as e:  # noqa: BLE001 - best effort: the engine is being discarded
                log.debug("vLLM shutdown: %s", e)
            del llm
            gc.collect()
