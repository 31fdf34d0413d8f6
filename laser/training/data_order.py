"""The order the training prompts are taken in: a seeded permutation per epoch, no repeats within an epoch."""

from __future__ import annotations

import numpy as np


class DataOrder:
    """Indices of `n` training examples, `take(k)` at a time, epoch after epoch; each epoch a new permutation from
    `rng` (the run's `data_order` stream). Its state is checkpointed, so a resumed run takes the same prompts."""

    def __init__(self, n: int, rng: np.random.Generator):
        self.n, self.rng = n, rng
        self.epoch, self.cursor = 0, 0
        self.order = rng.permutation(n)

    def take(self, k: int) -> list[int]:
        """The next `k` indices (crossing into the next epoch's permutation when this one runs out)."""
        out: list[int] = []
        while len(out) < k:
            if self.cursor == len(self.order):
                self.epoch += 1
                self.cursor = 0
                self.order = self.rng.permutation(self.n)
            step = min(k - len(out), len(self.order) - self.cursor)
            out += self.order[self.cursor:self.cursor + step].tolist()
            self.cursor += step
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "order": self.order.tolist(),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self.order = np.array(state["order"], dtype=np.int64)
        self.rng.bit_generator.state = state["rng"]
