"""The policy update: TRL's DPOTrainer on one round's (or one RM group's) preference pairs.

Iterative DPO: the reference model is a frozen copy of the policy taken at the start of each iteration
(`start_iteration`), not the initial SFT model. The optimizer (AdamW) persists across updates, so that
its moments carry over from group to group and round to round as in one long training run, and it is
part of what a checkpoint saves. The default loss is DPO + NLL on the chosen answer
(`loss_type=["sigmoid", "sft"]`), as the LASeR paper and Iterative RPO train.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .distributed import world

log = logging.getLogger(__name__)


class LoraSettings(BaseModel):
    """LoRA adapters through peft (the paper: r=16, alpha=32 on the q/v projections)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "v_proj"]


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


class DPOSettings(BaseModel):
    """The DPO step's hyperparameters (TRL `DPOConfig` names where they exist)."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0)
    learning_rate: float = Field(1e-4, gt=0)  # for the tiny embedded policy; ~5e-7 full / 5e-6 LoRA at 8B
    loss_type: list[str] = ["sigmoid", "sft"]
    loss_weights: list[float] | None = [1.0, 1.0]
    batch_size: int = Field(8, gt=0)  # pairs per optimizer step, over all processes together
    epochs: int = Field(1, gt=0)  # passes over each update's pairs
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int | None = Field(None, gt=8)
    lora: LoraSettings | None = None  # None: full fine-tuning

    @model_validator(mode="after")
    def _weights_match(self) -> DPOSettings:
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} "
                             f"loss types {self.loss_type}")
        return self


def per_device_batch_size(settings: DPOSettings) -> int:
    """Each process's share of `dpo.batch_size`, which is the global batch: a run takes the same optimizer
    steps on any number of processes (DDP). Raises ConfigError for a launch the DPO step cannot run under
    (FSDP, DeepSpeed, or a batch that does not split evenly)."""
    from laser.config import ConfigError  # here: laser.config imports this module

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
                 report_to: Sequence[str] = ()):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
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

    def update(self, rows: Sequence[dict]) -> dict:
        """One pass (`epochs`) of DPO over `rows` ({prompt, chosen, rejected}); returns TRL's metrics."""
        from datasets import Dataset
        from datasets.utils import logging as datasets_logging
        from transformers import PrinterCallback
        from transformers.utils import logging as hf_logging
        from trl import DPOConfig, DPOTrainer

        if not rows:
            return {"pairs": 0}
        if self.ref_model is None:
            self.start_iteration()
        data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
        s = self.settings
        # Quiet from here: TrainingArguments warns on every construction when a process group exists but the
        # run is not DDP (vLLM's in-process engine opens one), i.e. once per update of a single-process run.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
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
        except Exception:
            hf_logging.set_verbosity(verbosity)
            raise
        bars = datasets_logging.is_progress_bar_enabled()
        datasets_logging.disable_progress_bar()  # tokenizing a few pairs per update: bars would only flood the log
        tb_dir = os.environ.get("TENSORBOARD_LOGGING_DIR")
        if "tensorboard" in self.report_to:
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.work_dir.parent / "tensorboard" / "trl")
        try:
            trainer = DPOTrainer(model=self.model, ref_model=self.ref_model, args=args, train_dataset=data,
                                 processing_class=self.tokenizer, optimizers=(self.optimizer, None))
            trainer.remove_callback(PrinterCallback)  # one update is one small step of the run: no summary print
            out = trainer.train()
        finally:
            if "tensorboard" in self.report_to:
                if tb_dir is None:
                    os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
                else:
                    os.environ["TENSORBOARD_LOGGING_DIR"] = tb_dir
            hf_logging.set_verbosity(verbosity)
            if bars:
                datasets_logging.enable_progress_bar()
        self.updates += 1
        self.model.eval()
        return {"pairs": len(rows), "steps": out.global_step, "loss": float(out.training_loss)}

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
