"""The policy update: TRL's DPOTrainer on one round's (or one RM group's) preference pairs.

Iterative DPO: the reference is the policy as it was at the start of each iteration (`start_iteration`), not
the initial SFT model. Full fine-tuning keeps a frozen copy of the policy for it. With LoRA no model is
copied: the reference is the same base weights under a frozen copy of the adapters taken when the iteration
started (TRL's own "ref" adapter, which its DPOTrainer evaluates the reference with), and while the adapters
are still zero (the first iteration) the base with the adapters disabled. The optimizer persists across
updates, so that its moments carry over from group to group and round to round as in one long training run,
and it is part of what a checkpoint saves. The default loss is DPO + NLL on the chosen answer
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
from laser.statefile import StateFileError
from laser.streams import Streams

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


REF_ADAPTER = "ref"  # the adapter name TRL's DPOTrainer computes the reference log-probabilities with


def make_optimizer(params: list, settings: DPOSettings):
    """The persistent optimizer of `dpo.optim` over `params` (no weight decay, as TRL's DPO default)."""
    if settings.optim == "adamw_8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise ConfigError("dpo.optim: adamw_8bit needs bitsandbytes (pip install bitsandbytes, on a CUDA "
                              "machine); or set dpo.optim: adamw_torch") from e
        return bnb.optim.AdamW8bit(params, lr=settings.learning_rate, weight_decay=0.0)
    return torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)


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
    share = settings.batch_size // processes
    if settings.micro_batch_size and share % settings.micro_batch_size:
        raise ConfigError(f"dpo.micro_batch_size ({settings.micro_batch_size}) must divide each process's share of "
                          f"dpo.batch_size ({share} = {settings.batch_size} / {processes} processes)")
    return share


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
        self.lora = is_peft(model)
        self.ref_model = None  # full fine-tuning: the iteration's frozen copy of the policy
        self.ref_adapter: dict[str, torch.Tensor] | None = None  # LoRA: the iteration's adapter weights (None: off)
        self.has_reference = False
        # Only trainable parameters: with LoRA, the adapters (the frozen base weights take no optimizer state).
        self.optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], settings)
        self.updates = 0
        self.per_device_batch_size = per_device_batch_size(settings)

    def start_iteration(self) -> None:
        """Take the current policy as the reference of the iteration that starts: with LoRA a copy of the adapters
        (none while they are zero: the base is then the policy), else a frozen copy of the model."""
        if self.lora:
            adapters = self._adapters()
            fresh = all(not bool(v.any()) for k, v in adapters.items() if "lora_B" in k)
            self.ref_adapter = None if fresh else {k: v.detach().clone() for k, v in adapters.items()}
        else:
            self.ref_model = None  # the old copy goes before the new one is made
            ref = copy.deepcopy(self.model).eval()
            for p in ref.parameters():
                p.requires_grad_(False)
            self.ref_model = ref
        self.has_reference = True

    def _adapters(self) -> dict[str, torch.Tensor]:
        """The trained adapter's parameters, by name (peft's `default` adapter)."""
        return {k: p for k, p in self.model.named_parameters() if p.requires_grad}

    def _install_reference_adapter(self) -> None:
        """Make the model's "ref" adapter the iteration's reference (TRL evaluates the reference with it, or with
        every adapter disabled when the model has none): the copy taken at `start_iteration`, frozen."""
        peft_config = self.model.peft_config
        if self.ref_adapter is None:
            if REF_ADAPTER in peft_config:
                self.model.delete_adapter(REF_ADAPTER)
            return
        if REF_ADAPTER not in peft_config:
            self.model.add_adapter(REF_ADAPTER, peft_config[self.model.active_adapter])
        marker = f".{self.model.active_adapter}."
        with torch.no_grad():
            for k, v in self.ref_adapter.items():
                ref = self.model.get_parameter(k.replace(marker, f".{REF_ADAPTER}."))
                ref.requires_grad_(False)
                ref.copy_(v)

    @property
    def reference_parameters(self) -> int:
        """How many parameters the reference holds beyond the policy's own (a model copy, or a copy of the
        adapters)."""
        if self.ref_model is not None:
            return sum(p.numel() for p in self.ref_model.parameters())
        if self.ref_adapter is not None:
            return sum(v.numel() for v in self.ref_adapter.values())
        return 0

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

        if not self.has_reference:
            self.start_iteration()
        data = Dataset.from_list(self.dataset_rows(rows))
        s = self.settings
        # The policy's own device decides (models.device), not whether a GPU exists: a CPU policy stays on the CPU.
        on_gpu = next(self.model.parameters()).device.type == "cuda"
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
            micro = s.micro_batch_size or self.per_device_batch_size
            args = DPOConfig(
                output_dir=str(self.work_dir), per_device_train_batch_size=micro,
                gradient_accumulation_steps=self.per_device_batch_size // micro,
                num_train_epochs=s.epochs, learning_rate=s.learning_rate, lr_scheduler_type="constant", warmup_steps=0,
                beta=s.beta, loss_type=list(s.loss_type), loss_weights=s.loss_weights, max_grad_norm=s.max_grad_norm,
                max_length=s.max_length, report_to=self.report_to, save_strategy="no",
                logging_strategy="steps" if self.report_to else "no", logging_steps=1,
                disable_tqdm=True, seed=self._update_seed(), data_seed=self._update_seed(),
                dataloader_num_workers=0, bf16=on_gpu and torch.cuda.is_bf16_supported(), use_cpu=not on_gpu,
                gradient_checkpointing=s.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False} if s.gradient_checkpointing else None,
            )
            if self.lora and REF_ADAPTER in self.model.peft_config:  # TRL adds its own "ref" adapter: none may exist
                self.model.delete_adapter(REF_ADAPTER)
            trainer = DPOTrainer(model=self.model, ref_model=self.ref_model, args=args, train_dataset=data,
                                 processing_class=self.tokenizer, optimizers=(self.optimizer, None))
            if self.lora:  # TRL's "ref" adapter is a copy of the adapters now; the reference is the iteration's
                self._install_reference_adapter()
            trainer.remove_callback(PrinterCallback)  # one update is one small step of the run: no summary print
            yield trainer
        finally:
            if self.lora and REF_ADAPTER in self.model.peft_config:  # nothing outside an update sees it
                self.model.delete_adapter(REF_ADAPTER)
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

    def _update_seed(self) -> int:
        """The seed of this update's TRL trainer (its data order, dropout): the run seed's `dpo` stream per update
        (32 bits: transformers' set_seed also seeds numpy's global generator)."""
        return Streams(self.seed).seed_for("dpo", self.updates, bits=32)

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
        """The optimizer, the update count and, with LoRA, the reference adapter. A full fine-tuning reference (a
        whole model) is not in it: `save_reference` writes it once per iteration."""
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates,
                "reference": ("adapter" if self.ref_adapter is not None else "base") if self.lora
                else ("copy" if self.ref_model is not None else None),
                "ref_adapter": self.ref_adapter}

    def load_state_dict(self, state: dict, reference: str | Path | None = None) -> None:
        """Restore `state_dict()`; a full fine-tuning reference comes from `reference` (what `save_reference` wrote),
        and without it the next update starts a new iteration."""
        # A copy: torch keeps same-dtype moment tensors as given, which would alias another step's state.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.updates = state["updates"]
        self.ref_model, self.ref_adapter, self.has_reference = None, None, False
        if "ref_model" in state:  # the format of earlier versions: the reference's weights in the state itself
            if self.lora:
                raise StateFileError("this checkpoint holds its LoRA reference as a merged model (an earlier "
                                     "version's format); resume it with that version, or start the run again")
            if state["ref_model"] is not None:
                self.start_iteration()
                self.ref_model.load_state_dict(state["ref_model"])
            return
        if state["reference"] in ("adapter", "base"):
            self.ref_adapter = {k: v.clone() for k, v in state["ref_adapter"].items()} if state["ref_adapter"] \
                else None
            self.has_reference = True
        elif state["reference"] == "copy" and reference is not None:
            self.load_reference(reference)

    def save_reference(self, directory: str | Path) -> None:
        """Write the full fine-tuning reference's weights (safetensors) into `directory`."""
        from safetensors.torch import save_model

        Path(directory).mkdir(parents=True, exist_ok=True)
        save_model(self.ref_model, str(Path(directory) / "model.safetensors"))

    def load_reference(self, directory: str | Path) -> None:
        """Make the reference the weights `save_reference` wrote (a copy of the policy's architecture)."""
        from safetensors.torch import load_model

        self.start_iteration()
        load_model(self.ref_model, str(Path(directory) / "model.safetensors"), device=str(
            next(self.ref_model.parameters()).device))
