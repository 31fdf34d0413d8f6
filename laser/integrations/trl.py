"""The router inside TRL's GRPO: a reward function that routes each prompt to one reward model, and a callback
that teaches the router from held-out probes and checkpoints it with the trainer.

    reward = RoutedReward(reward_models, router, contexts=make_embedder(model, tokenizer))
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=GRPOConfig(...), train_dataset=train,
                          callbacks=[RouterCallback(reward, validation, every=5)])

`RoutedReward` is a plain `reward_funcs` callable (TRL 1.16's signature: `prompts`, `completions`,
`completion_ids`, the dataset's other columns as keyword arguments; one float, or None where the RM could not
score, per completion). For each distinct prompt of the batch it asks the router for one RM, from the policy's
own context of the prompt, and that RM alone scores the prompt's completions (GRPO's group). Scores are
normalized per RM by a running z-score: with GRPO's default `scale_rewards="group"` an RM's scale would not
matter anyway (advantages are standardized within a prompt's group, which one RM scores), but `"batch"` and
`"none"` compare completions of different prompts, hence of different RMs, and need the common scale.

`RouterCallback` is how the router learns (the engine's `rerank_gain`, `laser.training.router_feedback`):
every `every` optimizer steps it samples `probes` held-out validation prompts from the current policy, has the
RM the router picks for each score the samples, and rewards the router by how well that RM orders their right
and wrong answers (by the validation rows' gold answers). Its state is saved beside each trainer checkpoint
(`laser_router.safetensors`, no pickle) and restored when training resumes from one.

`colocate_vllm(trainer)`: for `use_vllm=True, vllm_mode="colocate"`, makes the trainer push its weights into the
colocated engine through vLLM's in-place `reload_weights` (TRL 1.16 calls the model's `load_weights`, which vLLM
0.32 refuses on a loaded model).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformers import TrainerCallback

from laser.config import RoundSettings
from laser.statefile import load_state, save_state
from laser.tasks.base import Example
from laser.training.router_feedback import ProbeHost, RerankProbes, probe_round

from .routed import RoutedReward

__all__ = ["ROUTER_STATE", "RoutedReward", "RouterCallback", "colocate_vllm"]

ROUTER_STATE = "laser_router.safetensors"  # in each `checkpoint-N/` of the trainer's output_dir


class RouterCallback(TrainerCallback):
    """Teaches a `RoutedReward`'s router from held-out probes every `every` optimizer steps, and checkpoints it.

    `validation`: held-out rows with gold answers (`laser.tasks.Example`, e.g. from `laser.tasks.load_jsonl`).
    Each probe round draws `probes` of them (the first `warmup` rounds `warmup_probes`, scored by every RM: the
    router has seen each RM before it routes), samples `n` completions of each from the trainer's model as it is
    then (`temperature`, `max_new_tokens`), and rewards the router by `rerank_gain` on those with right and wrong
    samples (`laser.training.router_feedback.RerankProbes`, the iterative-DPO loop's own probe stage). After the
    router's change detector forgets an RM, the next `relearn_rounds` probe rounds draw their rows near where it
    changed and every RM scores them (`round.relearn_rounds`).
    """

    def __init__(self, reward: RoutedReward, validation: Sequence[Example], every: int = 5, probes: int = 12,
                 n: int = 8, max_new_tokens: int = 16, temperature: float = 0.8, warmup: int = 1,
                 warmup_probes: int | None = 24, relearn_rounds: int = 1, seed: int = 0):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if not validation:
            raise ValueError("the router learns from held-out validation rows: none were given")
        settings = RoundSettings(rerank_prompts=probes, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                                 rerank_warmup=warmup, rerank_warmup_prompts=warmup_probes,
                                 relearn_rounds=relearn_rounds)
        # A router trained elsewhere (an iterative-DPO run) dated its last change in that run's rounds: this callback
        # counts its own probe rounds (a resumed callback restores its router's state after this).
        reward.router.last_change = None
        self.reward, self.every = reward, every
        self.host = ProbeHost(reward.router, reward.reward_models, validation, settings, seed)
        self.probe_stage = RerankProbes(self.host)
        self.engine = None  # an HFEngine over the trainer's model, made at the first probe round
        self.lines: list[dict] = []  # one per probe round: what the router was told

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        """A run resumed from `checkpoint-N` (state.global_step == N) takes the router saved there."""
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}" / ROUTER_STATE
        if state.global_step > 0 and path.is_file():
            self.load_state_dict(load_state(path))
        if state.global_step == 0 and self.host.round == 0:  # the warm-up, before the first routed batch
            self._probe_round(model, processing_class, state)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step % self.every == 0:
            self._probe_round(model, processing_class, state)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            save_state(self.state_dict(), Path(args.output_dir) / f"checkpoint-{state.global_step}" / ROUTER_STATE)

    def _probe_round(self, model, tokenizer, state) -> None:
        from laser.generation.hf_engine import HFEngine

        if model is None or tokenizer is None:
            raise ValueError("RouterCallback needs the trainer's model and processing_class (a tokenizer)")
        if self.engine is None or self.engine.model is not model:
            self.engine = HFEngine.wrap(model, tokenizer)
        was_training = model.training
        model.eval()
        try:
            learned, forward = probe_round(self.probe_stage, self.engine, self.reward.embed, self.reward.normalizer)
        finally:
            model.train(was_training)
        self.reward.rm_forward += forward
        forgot = self.reward.router.take_forgotten()  # the change detector's: see `round.relearn_rounds`
        self.lines.append({"step": state.global_step, "probe_round": self.host.round - 1, **learned.stats,
                           "feedback_by_domain": learned.by_domain(), **({"router_forgot": forgot} if forgot else {})})

    def state_dict(self) -> dict:
        return {"reward": self.reward.state_dict(), "probe_round": self.host.round}

    def load_state_dict(self, state: dict) -> None:
        self.reward.load_state_dict(state["reward"])
        self.host.round = int(state["probe_round"])


def colocate_vllm(trainer) -> None:
    """Have a `GRPOTrainer` with `use_vllm=True, vllm_mode="colocate"` sync its weights into its in-process vLLM
    engine with vLLM's `reload_weights` (in place, the engine's own path for new weights), instead of TRL 1.16's
    `model.load_weights` per tensor, which vLLM 0.32 refuses once the model is loaded ("'Parameter' object has no
    attribute 'weight_loader'"). TRL's own parameter walk is kept (PEFT adapters merged, FSDP / DeepSpeed
    gathered); tied weights are passed under each of their names, since vLLM refreshes a layer's processed weights
    (the CPU backend's packed ones) only when its own name arrives. Call it once, after building the trainer."""
    from accelerate.utils import is_peft_model
    from trl.generation import vllm_generation

    generation = getattr(trainer, "vllm_generation", None)
    if generation is None or getattr(generation, "mode", None) != "colocate":
        raise ValueError("colocate_vllm needs a GRPOTrainer built with use_vllm=True and vllm_mode='colocate'")
    model = generation.model
    config = getattr(getattr(model, "get_base_model", lambda: model)(), "config", None)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    peft = is_peft_model(model)

    def weights():
        names = set()
        for name, tensor in generation._iter_named_params():  # PEFT: merged while this generator runs
            names.add(name)
            yield name, tensor
            if tied and name.endswith("embed_tokens.weight") and "lm_head.weight" not in names:
                names.add("lm_head.weight")
                yield "lm_head.weight", tensor

    def sync_weights() -> None:
        llm = generation.llm
        if generation.enable_sleep_mode:
            vllm_generation.empty_cache()  # as TRL's own sync does before waking (it avoids OOM there)
            llm.wake_up(tags=["weights"])
            generation._llm_weights_sleeping = False
        # vLLM's layerwise reload may finish a layer after the iterator is spent, when a PEFT model's adapters are
        # unmerged again: its merged weights are copied first (a full model's tensors are handed over as they are).
        given = [(name, tensor.detach().clone()) for name, tensor in weights()] if peft else weights()
        llm.collective_rpc("reload_weights", kwargs={"weights_iterator": given})
        llm.reset_prefix_cache()  # cached prefixes hold activations of the old weights

    generation.sync_weights = sync_weights
