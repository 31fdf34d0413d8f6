"""The policy update: TRL's DPOTrainer on one round's (or one RM group's) preference pairs.

Iterative DPO: the reference model is a frozen copy of the policy taken at the start of each iteration
(`start_iteration`), not the initial SFT model. The optimizer (AdamW) persists across updates, so that
its moments carry over from group to group and round to round as in one long training run, and it is
part of what a checkpoint saves. The default loss is DPO + NLL on the chosen answer
(`loss_type=["sigmoid", "sft"]`), as the LASeR paper and Iterative RPO train.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from laser.config import ConfigError, DPOSettings, LoraSettings
from laser.generation.base import PromptRenderer

from .distributed import gather_from_ranks, world

log = logging.getLogger(__name__)


def apply_lora(model, lora: LoraSettings):
    """`model` wrapped with trainable LoRA adapters (base weights frozen); needs the `lora` extra (peft)."""
    try:
        import peft
    except ImportError as e:
        raise ImportError("dpo.lora needs peft: pip install 'laser-engine[lora]'") from e
    config = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    return peft.get_peft_model(model, config)


def is_peft(model) -> bool:
    """Whether `model` carries peft adapters."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def per_device_batch_size(settings: DPOSettings) -> int:
    """Each process's share of `dpo.batch_size`, which is the global batch: a run takes the same optimizer
    steps on any number of processes (DDP). Raises ConfigError for a launch the DPO step cannot run under
    (FSDP, DeepSpeed, or a batch that does not split evenly)."""
    for wrapper, flag in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED")):
        if os.environ.get(flag, "false").lower() in ("1", "true"):
            raise ConfigError(f"{wrapper} is not supported: each RM group's DPO update is its own TRL trainer, and all "
                              f"of them share one persistent optimizer, which {wrapper} takes over (transformers "
                              "refuses it under FSDP; DeepSpeed ZeRO re-points it at its own flat partition). Use "
                              "DDP: torchrun --nproc_per_node N, or accelerate launch --config_file "
                              "configs/accelerate/ddp.yaml")
    processes = world()[1]
    if settings.batch_size % processes:
        raise ConfigError(f"dpo.batch_size ({settings.batch_size}) must be a multiple of the number of "
                          f"processes ({processes}): it is the global batch, split evenly across them")
    return settings.batch_size // processes


class DPOStep:
    """Runs DPO updates of `model` in place; holds the iteration's reference model and the optimizer."""

    def __init__(self, model, tokenizer, settings: DPOSettings, work_dir: str | Path, seed: int = 0,
                 report_to: Sequence[str] = (), renderer: PromptRenderer | None = None):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        # Pairs reach TRL in the form it tokenizes to the prompt the engine sampled from (PromptRenderer).
        self.renderer = renderer or PromptRenderer(tokenizer, "never")
        # TRL's own per-step logs go to TensorBoard too (<run>/tensorboard/trl), not to W&B: transformers'
        # WandbCallback would re-key every metric of the run (ours included) to its per-update global_step and
        # overwrite the run's config with each update's TrainingArguments. The round lines carry the DPO loss.
        self.report_to = [t for t in report_to if t != "wandb"]
        self.work_dir = Path(work_dir)
        self.seed = seed
        self.ref_model = None
        # Only trainable parameters: with LoRA, the adapters (the frozen base weights take no optimizer state).
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                           lr=settings.learning_rate, weight_decay=0.0)
        self.updates = 0
        self.per_device_batch_size = per_device_batch_size(settings)

    def start_iteration(self) -> None:
        """Freeze a copy of the current policy as the reference model of the iteration that starts."""
        ref = copy.deepcopy(self.model)
        if is_peft(ref):  # a plain model with the adapters merged in: TRL patches the reference's own forward
            ref = ref.merge_and_unload()
        self.ref_model = ref.eval()
        for p in self.ref_model.parameters():
            p.requires_grad_(False)

    def dataset_rows(self, rows: Sequence[dict]) -> list[dict]:
        """The rows TRL trains on: each pair ({prompt, chosen, rejected}) in the renderer's form."""
        return [self.renderer.dpo_row(r["prompt"], r["chosen"], r["rejected"]) for r in rows]

    @contextlib.contextmanager
    def _trainer(self, rows: Sequence[dict]):
        """TRL's DPOTrainer over `rows` ({prompt, chosen, rejected}) with the run's settings, this step's optimizer
        and the iteration's reference model, quiet while it lives."""
        from datasets import Dataset
        from datasets.utils import logging as datasets_logging
        from transformers import PrinterCallback
        from transformers.utils import logging as hf_logging
        from trl import DPOConfig, DPOTrainer

        if self.ref_model is None:
            self.start_iteration()
        data = Dataset.from_list(self.dataset_rows(rows))
        s = self.settings
        # Quiet from here: TrainingArguments warns on every construction when a process group exists but the
        # run is not DDP (vLLM's in-process engine opens one), i.e. once per update of a single-process run.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        bars = datasets_logging.is_progress_bar_enabled()
        datasets_logging.disable_progress_bar()  # tokenizing a few pairs per update: bars would only flood the log
        tb_dir = os.environ.get("TENSORBOARD_LOGGING_DIR")
        if "tensorboard" in self.report_to:
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.work_dir.parent / "tensorboard" / "trl")
        try:
            args = DPOConfig(
                output_dir=str(self.work_dir), per_device_train_batch_size=self.per_device_batch_size,
                num_train_epochs=s.epochs, learning_rate=s.learning_rate, lr_scheduler_type="constant", warmup_steps=0,
                beta=s.beta, loss_type=list(s.loss_type), loss_weights=s.loss_weights, max_grad_norm=s.max_grad_norm,
                max_length=s.max_length, report_to=self.report_to, save_strategy="no",
                logging_strategy="steps" if self.report_to else "no", logging_steps=1,
                disable_tqdm=True, seed=self.seed + self.updates, data_seed=self.seed + self.updates,
                dataloader_num_workers=0, bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
                use_cpu=not torch.cuda.is_available(), gradient_checkpointing=False,
            )
            trainer = DPOTrainer(model=self.model, ref_model=self.ref_model, args=args, train_dataset=data,
                                 processing_class=self.tokenizer, optimizers=(self.optimizer, None))
            trainer.remove_callback(PrinterCallback)  # one update is one small step of the run: no summary print
            yield trainer
        finally:
            if "tensorboard" in self.report_to:
                if tb_dir is None:
                    os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
                else:
                    os.environ["TENSORBOARD_LOGGING_DIR"] = tb_dir
            hf_logging.set_verbosity(verbosity)
            if bars:
                datasets_logging.enable_progress_bar()

    def update(self, rows: Sequence[dict]) -> dict:
        """One pass (`epochs`) of DPO over `rows` ({prompt, chosen, rejected}); returns the pairs, optimizer steps
        and training loss (the mean over every process)."""
        if not rows:
            return {"pairs": 0}
        with self._trainer(rows) as trainer:
            out = trainer.train()
        self.updates += 1
        self.model.eval()
        losses = gather_from_ranks(float(out.training_loss))  # TRL's is each rank's own half of every batch
        return {"pairs": len(rows), "steps": out.global_step, "loss": sum(losses) / len(losses)}

    def trainable(self) -> list[torch.nn.Parameter]:
        """The parameters an update changes (with LoRA, the adapters), in a fixed order."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def gradients(self, groups: Sequence[Sequence[dict]]) -> list[torch.Tensor]:
        """Per group of pairs: the gradient of its mean DPO loss (TRL's loss, the run's loss types, all its pairs in
        one batch) with respect to `trainable()`, flattened, at the current weights; nothing is updated."""
        out = [torch.zeros(sum(p.numel() for p in self.trainable())) for _ in groups]
        rows = [r for g in groups for r in g]
        if not rows:
            return out
        with self._trainer(rows) as trainer:  # one trainer (and one tokenization) for every group
            data = trainer.train_dataset
            if len(data) == len(rows):
                start = 0
                for k, g in enumerate(groups):
                    if g:
                        out[k] = self._gradient(trainer, [data[i] for i in range(start, start + len(g))])
                    start += len(g)
                return out
        for k, g in enumerate(groups):  # TRL dropped a pair (a prompt over max_length): one trainer per group
            if g:
                with self._trainer(g) as trainer:
                    if len(trainer.train_dataset):
                        out[k] = self._gradient(trainer, list(trainer.train_dataset))
        return out

    def _gradient(self, trainer, examples: list[dict]) -> torch.Tensor:
        """The flat gradient of TRL's DPO loss over these tokenized pairs (one batch)."""
        params = self.trainable()
        batch = trainer._prepare_inputs(trainer.data_collator(examples))
        self.model.train()
        try:
            grads = torch.autograd.grad(trainer.compute_loss(trainer.model, batch), params, allow_unused=True)
        finally:
            self.model.eval()
        return torch.cat([(torch.zeros_like(p) if d is None else d).reshape(-1).float().cpu()
                          for p, d in zip(params, grads, strict=True)])

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates,
                "ref_model": None if self.ref_model is None else self.ref_model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        # A copy: torch keeps same-dtype moment tensors as given, which would alias another step's state.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.updates = state["updates"]
        if state["ref_model"] is not None:
            self.start_iteration()
            self.ref_model.load_state_dict(state["ref_model"])
