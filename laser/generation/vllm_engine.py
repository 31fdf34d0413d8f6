"""`VLLMEngine`: an in-process `vllm.LLM` on the policy directory, with in-place weight sync and sleep mode.

vLLM runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so that `sync_weights` can hand the
trainer's tensors to the model runner's `reload_weights` directly: no save to disk, no restart. A
tensor-parallel engine's workers are other processes: its weights go through a safetensors file instead
(`weight_sync: files`). Under torchrun / accelerate each process runs its own engine on its own GPU
through vLLM's `external_launcher`, which joins the launcher's process group. On CPU the KV cache is a
fixed number of bytes of RAM (`kv_cache_memory_bytes`; the fraction-of-memory knob reserves a share of
*all* RAM there); on GPU the usual `gpu_memory_utilization`, `tensor_parallel_size` and prefix caching
apply, and sleep mode (`sleep: 1|2`) frees the GPU for the DPO update.
"""

from __future__ import annotations

import dataclasses
import difflib
import gc
import inspect
import logging
import os
import tempfile
from pathlib import Path

import torch

from laser.config import ConfigError

from .base import GenerationEngine, GenerationError, Sample, SamplingSettings, policy_state_dict

log = logging.getLogger(__name__)


def llm_kwargs(model_path, gpu: bool, dtype: str = "auto", max_model_len: int | None = None, seed: int = 0,
               kv_cache_memory_bytes: int | None = 64 << 20, gpu_memory_utilization: float = 0.5,
               tensor_parallel_size: int = 1, enable_prefix_caching: bool = True, enforce_eager: bool | None = None,
               trust_remote_code: bool = False, sleep: int = 0, processes: int = 1, extra: dict | None = None) -> dict:
    """The `vllm.LLM` arguments for a GPU or a CPU machine (`processes`: how many the launch has; `extra`: more
    arguments, which win)."""
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
    if sleep:
        kwargs["enable_sleep_mode"] = True
    if processes > 1:
        # Each process of a torchrun / accelerate launch runs its own engine on its own device (cuda:LOCAL_RANK) in
        # the launcher's process group; the default executor would put every process's engine on cuda:0. The same
        # executor runs on CPU, where tests/test_distributed.py runs it.
        kwargs["distributed_executor_backend"] = "external_launcher"
    kwargs.update(extra or {})
    return kwargs


def check_extra(extra: dict) -> None:
    """Raise ConfigError naming each key of `engine.extra` that `vllm.LLM` does not take."""
    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs

    known = {n for n, p in inspect.signature(LLM.__init__).parameters.items()
             if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    known |= {f.name for f in dataclasses.fields(EngineArgs)}
    bad = [k for k in extra if k not in known]
    if bad:
        hints = [f"engine.extra.{k}: vllm.LLM takes no such argument" +
                 (f" (did you mean {', '.join(close)}?)" if (close := difflib.get_close_matches(k, known, 3)) else "")
                 for k in bad]
        raise ConfigError("\n".join(hints))


def start_failure(model_path, error: Exception, gpu: bool) -> str:
    """What to tell a user whose vLLM engine did not start, with the settings that would change it."""
    text = f"{type(error).__name__}: {error}"
    lowered = text.lower()
    if any(m in lowered for m in ("out of memory", "no available memory", "not enough memory", "kv cache", "oom")):
        hint = ("it ran out of memory: lower engine.max_model_len, raise engine.gpu_memory_utilization (on CPU "
                "engine.kv_cache_mb), or leave it more of the GPU (engine.sleep: 2 frees the engine during the update, "
                "models.rm_placement: shard spreads the RMs); `laser plan --config ...` shows what fits") if gpu else \
            "it ran out of memory: lower engine.max_model_len or engine.kv_cache_mb"
    elif "max_model_len" in lowered or "max_position_embeddings" in lowered:
        hint = "set engine.max_model_len to at most the model's context window (or leave it unset: the model's own)"
    else:
        hint = "check the engine settings (engine.*, engine.extra), or set engine: hf to generate with transformers"
    return f"vLLM could not start on {model_path} ({text}); {hint}"


class VLLMEngine(GenerationEngine):
    """Sampling and greedy decoding with vLLM; `sync_weights` pushes a trainer's weights in place."""

    name = "vllm"

    def __init__(self, model_path: str | Path, dtype: str = "auto", max_model_len: int | None = None,
                 chat_template: str = "auto", batch_size: int = 1024, seed: int = 0,
                 kv_cache_memory_bytes: int | None = 64 << 20, gpu_memory_utilization: float = 0.5,
                 tensor_parallel_size: int = 1, enable_prefix_caching: bool = True, enforce_eager: bool | None = None,
                 trust_remote_code: bool = False, sleep: int = 0, weight_sync: str = "auto", extra: dict | None = None):
        # In-process engine core: required for in-place weight sync (tensors cannot cross the process pipe).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM
        from vllm.platforms import current_platform

        extra = dict(extra or {})
        check_extra(extra)
        if sleep and not current_platform.is_sleep_mode_available():
            raise ConfigError(f"engine.sleep: {sleep}, but vLLM has no sleep mode on this machine "
                              f"({current_platform.device_type or 'no'} device; it sleeps on CUDA): set "
                              "engine.sleep: 0, or engine: hf, whose engine sleeps anywhere")
        if weight_sync not in ("auto", "tensors", "files"):
            raise ValueError(f"weight_sync must be auto, tensors or files, got {weight_sync!r}")
        gpu = torch.cuda.is_available()
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        kwargs = llm_kwargs(model_path, gpu=gpu, dtype=dtype, max_model_len=max_model_len,
                            seed=seed, kv_cache_memory_bytes=kv_cache_memory_bytes,
                            gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                            enable_prefix_caching=enable_prefix_caching, enforce_eager=enforce_eager,
                            trust_remote_code=trust_remote_code, sleep=sleep, processes=processes, extra=extra)
        # A tensor-parallel engine's workers are processes of their own: tensors cannot be handed to them.
        self.weight_sync = weight_sync if weight_sync != "auto" else \
            ("files" if kwargs.get("tensor_parallel_size", 1) > 1 else "tensors")
        threads = torch.get_num_threads()
        try:
            self.llm = LLM(**kwargs)
        except Exception as e:
            raise GenerationError(start_failure(model_path, e, gpu)) from e
        # vLLM's CPU worker lowers torch's (process-wide) thread count to leave a core to a separate server
        # process; in-process, that would only slow down the trainer that shares this process.
        torch.set_num_threads(threads)
        tokenizer = self.llm.get_tokenizer()
        super().__init__(model_path, tokenizer, self.llm.llm_engine.model_config.max_model_len, chat_template,
                         batch_size, sleep=sleep)

    def _generate(self, prompt_ids: list[list[int]], settings: SamplingSettings,
                  seeds: list[int] | None) -> list[list[Sample]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        def params(seed: int | None) -> SamplingParams:
            return SamplingParams(
                n=settings.n, temperature=settings.temperature, top_p=settings.top_p,
                max_tokens=settings.max_new_tokens, stop=list(settings.stop) or None, seed=seed,
                # The sampled token's own log-probability, for the cumulative sum; None: not computed at all.
                logprobs=0 if settings.logprobs else None,
            )

        # One request per prompt, each with its own seed: under one seed every prompt would replay the same draws
        # (vLLM seeds a request's generator with its seed, and the i-th of its n samples with seed + i).
        params = [params(s) for s in seeds] if seeds is not None else params(None)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False)
        groups = []
        for out in outputs:
            groups.append([Sample(c.text, tuple(c.token_ids), "length" if c.finish_reason == "length" else "stop",
                                  c.cumulative_logprob) for c in out.outputs])
        return groups

    def _load_weights(self, model) -> None:
        weights = policy_state_dict(model)
        if self.weight_sync == "files":
            self._load_from_files(weights)
        else:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(weights.items())})
        self.llm.reset_prefix_cache()  # cached prefixes hold activations of the old weights

    def _load_from_files(self, weights: dict) -> None:
        """The weights written to a safetensors file (in shared memory where there is some) that every worker reads."""
        from safetensors.torch import save_file

        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        # Every name the hand-over passes, tied weights (embeddings and lm_head) included: vLLM refreshes a layer's
        # processed weights (the CPU backend's packed ones) only when its own name arrives. safetensors stores no
        # shared memory, so a tied tensor is written once per name.
        seen: set[int] = set()
        unique = {}
        for k, v in weights.items():
            v = v.detach().contiguous()
            unique[k] = v.clone() if v.data_ptr() in seen else v
            seen.add(v.data_ptr())
        with tempfile.TemporaryDirectory(prefix="laser-weights-", dir=shm) as d:
            save_file(unique, os.path.join(d, "model.safetensors"))
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": d})

    def _sleep(self, level: int) -> None:
        self.llm.sleep(level=level)

    def _wake_weights(self) -> None:
        self.llm.wake_up(tags=["weights"])

    def _wake_rest(self) -> None:
        self.llm.wake_up(tags=["kv_cache"])

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception as e:  # noqa: BLE001 - best effort: the engine is being discarded
                log.debug("vLLM shutdown: %s", e)
            del llm
            gc.collect()
