"""Stopping a run without losing work: SIGINT (Ctrl-C) and SIGTERM (`laser stop`, a scheduler) end a run at the
next round boundary, with a checkpoint of the last completed round; a second signal stops it at once.

A round changes the data cursor, the router, the normalizers and the policy as it goes, so the only states a
checkpoint may hold are those between rounds. The first signal therefore lets the round in progress finish (its
metrics line, its evaluation if one is due), then the run writes a checkpoint of that round and raises
`RunStopped`. A second signal raises `KeyboardInterrupt` where the run is: the round in progress is dropped and
nothing is written, so the last checkpoint stays what it was (a checkpoint being written then is left unnamed:
`Trainer.save_checkpoint` renames a complete directory or nothing).

Under several processes the ranks agree at each round boundary (any rank's request stops all of them), so every
rank stops after the same round.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

from .distributed import gather_from_ranks

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunStopped(KeyboardInterrupt):
    """The run stopped on a signal after completing round `round`, checkpointed in `checkpoint`."""

    def __init__(self, signum: int, round: int, checkpoint):
        super().__init__(f"stopped by {signal.Signals(signum).name} after round {round}")
        self.signum, self.round, self.checkpoint = signum, round, checkpoint

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by that signal


class StopRequest:
    """Whether a stop was asked for, and by which signal."""

    def __init__(self):
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def agreed(self) -> int | None:
        """The signal that stops every rank at this round boundary (any rank's), or None: a collective call."""
        asked = [s for s in gather_from_ranks(self.signum) if s is not None]
        return asked[0] if asked else None


@contextmanager
def stop_on_signals(say=None):
    """Within the block, the first SIGINT or SIGTERM sets the yielded `StopRequest` (and calls `say` with a line for
    the user); a second raises KeyboardInterrupt. The previous handlers come back afterwards. Handlers replace an
    inherited "ignore" too: a run started in the background of a non-interactive shell ignores SIGINT otherwise.
    Outside the main thread (where Python cannot take signals) nothing is installed."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.signum = signum
        line = (f"{signal.Signals(signum).name}: stopping after the round in progress (it is completed and "
                "checkpointed); send it again to stop at once, dropping that round")
        (say or log.warning)(line)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
