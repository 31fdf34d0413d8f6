"""Checkpoints of a run: written crash-safe (complete or absent, never half), found again, read without running code.

`checkpoints/round-NNNNNN/` holds the policy (with LoRA, the adapters only) and the trainer state (safetensors,
`laser.statefile`); `checkpoints/latest` names the newest; a full fine-tuning DPO reference is written once per
iteration beside them (`reference-NNNNNN/`).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from laser.statefile import StateFileError, load_state, save_state

from .distributed import barrier, is_main_process
from .dpo import is_peft

if TYPE_CHECKING:
    from .loop import Trainer

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.safetensors"  # in each checkpoint, beside policy/


def save_checkpoint(trainer: Trainer) -> Path:
    """Write `checkpoints/round-NNNNNN/` for the round completed last, and point `latest` at it.

    Crash-safe: everything is written into a temporary directory, flushed to disk (fsync), and only then renamed
    to its name, so a name always holds a complete checkpoint; `latest` is replaced the same way. A crash or a
    second Ctrl-C during the write leaves the previous checkpoint as it was. Every rank returns once rank 0 is
    done (a barrier), so no rank runs ahead of the checkpoint or exits before it is written."""
    ckpt_root = trainer.run_dir / "checkpoints"
    final = ckpt_root / f"round-{trainer.round:06d}"
    if is_main_process():
        ckpt_root.mkdir(exist_ok=True)
        tmp = ckpt_root / f".{final.name}.tmp-{os.getpid()}"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            trainer.policy.save_pretrained(tmp / "policy")  # with LoRA, the adapters only
            trainer.tokenizer.save_pretrained(tmp / "policy")
            if trainer.dpo.ref_model is not None and trainer.reference_needed():
                # A full fine-tuning reference is written once per iteration, beside the checkpoints that share
                # it; not at all when the next round starts a new iteration (it makes its own).
                ref = ckpt_root / reference_name(trainer.reference_round)
                if not (ref / "model.safetensors").is_file():
                    ref_tmp = ckpt_root / f".{ref.name}.tmp-{os.getpid()}"
                    try:
                        shutil.rmtree(ref_tmp, ignore_errors=True)
                        trainer.dpo.save_reference(ref_tmp)
                        _publish(ref_tmp, ref)
                    finally:
                        shutil.rmtree(ref_tmp, ignore_errors=True)
            save_state(trainer.state_dict(), tmp / TRAINER_STATE)
            _publish(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # only left when the write did not finish
        replace_text(ckpt_root / "latest", final.name)
    barrier()
    return final


def load_checkpoint(trainer: Trainer, path: str | Path | None = None) -> Path:
    """Restore the newest checkpoint (or `path`): policy weights, trainer state, and the engine's weights."""
    path = latest_checkpoint(trainer.run_dir) if path is None else Path(path)
    if is_peft(trainer.policy):  # the checkpoint holds the adapters only
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(trainer.policy, load_file(path / "policy" / "adapter_model.safetensors"))
    else:
        from transformers import AutoModelForCausalLM

        trainer.policy.load_state_dict(AutoModelForCausalLM.from_pretrained(path / "policy").state_dict())
    trainer.load_state_dict(read_trainer_state(path))
    trainer.engine.sync_weights(trainer.policy)
    return path


def reference_name(round_: int) -> str:
    """The directory (under checkpoints/) of the full fine-tuning reference of the iteration that started then."""
    return f"reference-{round_:06d}"


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint directory `checkpoints/latest` names (or, if a crash left `latest` naming a directory that is
    not there, the newest complete `round-*` directory)."""
    ckpt_root = Path(run_dir) / "checkpoints"
    named = ckpt_root / (ckpt_root / "latest").read_text().strip() if (ckpt_root / "latest").is_file() else None
    if named is not None and named.is_dir():
        return named  # read_trainer_state says what is wrong with it, if anything is
    complete = sorted(p for p in ckpt_root.glob("round-*") if (p / TRAINER_STATE).is_file())
    if not complete:
        raise FileNotFoundError(f"{ckpt_root} has no checkpoint to resume from (no checkpoints/latest)")
    return complete[-1]


def _publish(tmp: Path, final: Path) -> None:
    """Flush the directory `tmp` to disk and rename it to `final`, replacing what was there only once the new one
    is complete (the old one is renamed aside first and removed last)."""
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
        _fsync_dir(d)
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def replace_text(path: Path, text: str) -> None:
    """Replace the file `path` with `text` all at once: written beside it, flushed to disk, renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Flush a directory's entries (the names created or renamed in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_trainer_state(checkpoint: str | Path) -> dict:
    """The trainer state of a checkpoint directory, read without running any code.

    A `trainer.pt` (the pickle format of earlier versions) is never unpickled: unpickling a file can run
    whatever code it holds, and a run directory may come from someone else.
    """
    checkpoint = Path(checkpoint)
    path = checkpoint / TRAINER_STATE
    if not path.is_file() and (checkpoint / "trainer.pt").exists():
        raise StateFileError(f"{checkpoint} holds its trainer state as a pickle (trainer.pt, an earlier version's "
                             f"format), which is not loaded because unpickling can run code; start the run again "
                             f"(its metrics.jsonl stays) or resume it with the version that wrote it")
    return load_state(path)


def cuda_rng_states() -> list:
    """Each visible GPU's torch generator state (none on a CPU-only machine)."""
    return list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else []


def set_cuda_rng_states(states: list) -> None:
    """Restore what `cuda_rng_states` saved; a checkpoint moved to a machine with other GPUs says so."""
    if not states:
        return
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have != len(states):
        log.warning("the checkpoint holds the random state of %d GPU(s) and this process sees %d: the resumed run "
                    "samples differently from an uninterrupted one", len(states), have)
        return
    torch.cuda.set_rng_state_all(states)


def count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def truncate_lines(path: Path, n: int) -> None:
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        if len(lines) > n:
            replace_text(path, "".join(lines[:n]))
