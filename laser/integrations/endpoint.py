"""`laser serve-router`: one reward endpoint that routes each query to one RM, for OpenRLHF and verl.

Speaks OpenRLHF's remote reward-model protocol, so that `--reward.remote_url http://host:port/get_reward` (or
the older `--remote_rm_url`) points at it; `laser.integrations.verl` is the custom reward function verl loads
by path and calls it. Behind it: a `RoutedReward` (the router, its RMs, the policy's contexts).

    POST /get_reward (or /)  {"query": [prompt + response, ...], "prompts": [prompt, ...], "labels": [...]}
                             -> {"rewards": [...], "scores": [...], "extra_logs": {"router/share_<rm>": [...]}}
    POST /feedback           {"prompts": [...], "completions": [...], "correct": [true, false, ...]}
                             -> {"learned": n}: the router learns from scored held-out samples
    GET  /health             -> {"status": "ok", "reward_models": [...]}
    GET  /stats              -> requests, picks per RM and per domain, prompts rerouted, RM passes, router updates

How the router learns: from held-out samples only. `POST /feedback` brings them scored (right or wrong); and a
`/get_reward` query whose prompt is one of the endpoint's validation rows (`--validation`, with gold answers) is
judged by its gold answer after it is scored, and the RM it was routed to is rewarded as on a probe
(`rerank_gain`: how it ordered the prompt's right and wrong responses). Other queries never teach the router.

Concurrency and faults: requests are served by a thread each; routing, scoring and learning happen under one lock
(the router's state changes with every request), so each request is answered once, from one consistent router.
A prompt whose RM could not score (a reward server down after its retries) goes to the next RM the router ranks
there and is counted; where no RM can score a request, it is answered 503 (retry later), never with made-up
rewards. A malformed request is answered 400 with the reason. The router's state is saved atomically to
`--state` every `save_every` requests and at shutdown, and read back at start (a warm start from a trained run:
`--init-from runs/<run>/checkpoints/latest`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from laser.statefile import load_state, save_state
from laser.tasks.base import Example
from laser.tasks.checkers import check
from laser.training.feedback import pairwise_gain

from .routed import RoutedReward

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    """A request the endpoint cannot answer as sent (answered 400 with this message)."""


class Unavailable(RuntimeError):
    """No reward model could score a request (answered 503)."""


def _strings(body: dict, key: str, n: int | None = None) -> list[str]:
    values = body.get(key)
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BadRequest(f"{key!r} must be a list of strings")
    if n is not None and len(values) != n:
        raise BadRequest(f"{key!r} has {len(values)} items for {n} queries")
    return values


PRIOR_COUNTS = ("prompts", "informative", "rm_forward")  # what `/stats` and the state keep of an offline prior


class RoutingService:
    """The routed reward behind the endpoint: scoring, learning from held-out samples, stats, state on disk."""

    def __init__(self, reward: RoutedReward, validation: Sequence[Example] = (), state_path: str | Path | None = None,
                 save_every: int = 100):
        self.reward = reward
        self.validation = {ex.prompt: ex for ex in validation}
        self.state_path = None if state_path is None else Path(state_path)
        self.save_every = save_every
        self.lock = threading.Lock()
        self.requests = 0
        self.updates = 0  # (prompt, RM) observations the router learned from
        self.by_domain: dict[str, Counter] = defaultdict(Counter)
        self.prior: dict | None = None  # what an offline prior taught a fresh router (`laser.training.prior`)
        self.resumed = self.state_path is not None and self.state_path.is_file()
        if self.resumed:
            self.load_state_dict(load_state(self.state_path))

    # --- requests --------------------------------------------------------------------------------------
    def get_reward(self, body: dict) -> dict:
        """OpenRLHF's request: `query` = prompt + response (as the actor produced them), `prompts`, `labels`."""
        queries = _strings(body, "query")
        prompts = _strings(body, "prompts", len(queries)) if "prompts" in body else None
        if prompts is None:
            raise BadRequest("'prompts' is missing: the router routes by the prompt, which OpenRLHF sends with "
                             "every query")
        responses = []
        for i, (q, p) in enumerate(zip(queries, prompts, strict=True)):
            if not q.startswith(p):
                raise BadRequest(f"query {i} does not start with its prompt: each query is the prompt followed by "
                                 f"the response")
            responses.append(q[len(p):])
        labels = body.get("labels")
        domains = [str(x) for x in labels] if isinstance(labels, list) and len(labels) == len(queries) else None
        with self.lock:
            scored = self.reward.score(prompts, responses, domains)
            if any(r is None for r in scored.rewards):
                raise Unavailable(f"{sum(r is None for r in scored.rewards)} of {len(queries)} responses could not "
                                  f"be scored by any reward model; retry later")
            self._learn_from_validation(scored, prompts, responses)
            self._count(scored, prompts, domains)
        rewards = [float(r) for r in scored.rewards]
        rms = [self.reward.router.rm_names[a] for a in scored.assignment.arms[scored.instance]]
        # OpenRLHF logs each extra_logs entry per sample (mean over the batch): one 0/1 column per RM.
        shares = {f"router/share_{rm}": [float(x == rm) for x in rms] for rm in self.reward.router.rm_names}
        return {"rewards": rewards, "scores": rewards, "extra_logs": shares}

    def feedback(self, body: dict) -> dict:
        """Scored held-out samples: each prompt with right and wrong completions rewards the RM the router picks."""
        prompts = _strings(body, "prompts")
        completions = _strings(body, "completions", len(prompts))
        correct = body.get("correct")
        if not isinstance(correct, list) or len(correct) != len(prompts) or \
                not all(isinstance(c, bool) for c in correct):
            raise BadRequest(f"'correct' must be a list of {len(prompts)} booleans, one per completion")
        with self.lock:
            scored = self.reward.score(prompts, completions, explore=True)  # held-out samples: the router explores
            learned = self._learn(scored, np.array(correct, dtype=bool))
        return {"learned": learned}

    def stats(self) -> dict:
        with self.lock:
            return {"requests": self.requests, "picks": dict(self.reward.picks),
                    "picks_by_domain": {d: dict(c) for d, c in self.by_domain.items()},
                    "rerouted": dict(self.reward.rerouted), "rm_forward": self.reward.rm_forward,
                    "router_updates": self.updates,
                    "prior": None if self.prior is None else {k: self.prior[k] for k in PRIOR_COUNTS}}

    # --- learning ---------------------------------------------------------------------------------------
    def _learn_from_validation(self, scored, prompts: list[str], responses: list[str]) -> None:
        """Queries whose prompt is a validation row: judged by its gold answer, they reward their RM."""
        if not self.validation:
            return
        right = np.array([p in self.validation and check(self.validation[p], r)
                          for p, r in zip(prompts, responses, strict=True)], dtype=bool)
        held_out = np.array([p in self.validation for p in scored.prompts])
        if held_out.any():
            self._learn(scored, right, held_out)

    def _learn(self, scored, right: np.ndarray, only: np.ndarray | None = None) -> int:
        """Reward each instance's RM by how it ordered the instance's right and wrong completions; instances
        whose completions are all right or all wrong teach nothing."""
        rows = np.arange(len(scored.instance))
        values = np.array([np.nan if r is None else r for r in scored.rewards], dtype=np.float64)
        keep, gains = [], []
        for i in range(len(scored.prompts)):
            mine = rows[scored.instance == i]  # flat positions of instance i's completions, in input order
            if (only is not None and not only[i]) or right[mine].all() or not right[mine].any():
                continue
            keep.append(i)
            gains.append(pairwise_gain(values[mine], right[mine]))
        if keep:
            idx = np.array(keep)
            self.reward.router.observe(scored.contexts[idx], scored.assignment.subset(idx), np.array(gains))
            self.updates += len(idx)
        return len(keep)

    def _count(self, scored, prompts: list[str], domains: list[str] | None) -> None:
        self.requests += 1
        _, first = np.unique(scored.instance, return_index=True)  # each instance's first response
        for i, at in enumerate(first):
            domain = domains[at] if domains is not None else "*"
            self.by_domain[domain][self.reward.router.rm_names[scored.assignment.arms[i]]] += 1
        if self.state_path is not None and self.requests % self.save_every == 0:
            self.save()

    # --- state ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"reward": self.reward.state_dict(), "requests": self.requests, "updates": self.updates,
                "by_domain": {d: dict(c) for d, c in self.by_domain.items()},
                "prior": {} if self.prior is None else {k: int(self.prior[k]) for k in PRIOR_COUNTS}}

    def load_state_dict(self, state: dict) -> None:
        self.reward.load_state_dict(state["reward"])
        self.requests, self.updates = int(state["requests"]), int(state["updates"])
        self.by_domain = defaultdict(Counter, {d: Counter(c) for d, c in state["by_domain"].items()})
        self.prior = dict(state.get("prior") or {}) or None  # what the router's offline prior cost, if it had one

    def save(self) -> None:
        """Write the state beside `state_path` and rename it over (a crash leaves the previous state whole)."""
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".{self.state_path.name}.tmp")
        save_state(self.state_dict(), tmp)
        tmp.replace(self.state_path)


def make_server(service: RoutingService, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server over `service` (port 0: any free port; `server.server_address` says which)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path == "/health":
                self._answer(200, {"status": "ok", "reward_models": list(service.reward.router.rm_names)})
            elif self.path == "/stats":
                self._answer(200, service.stats())
            else:
                self._answer(404, {"error": f"no such path {self.path!r}: GET /health or /stats"})

        def do_POST(self):  # noqa: N802
            routes = {"/": service.get_reward, "/get_reward": service.get_reward, "/feedback": service.feedback}
            if self.path not in routes:
                self._answer(404, {"error": f"no such path {self.path!r}: POST /get_reward or /feedback"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                if not isinstance(body, dict):
                    raise BadRequest("the body must be a JSON object")
                self._answer(200, routes[self.path](body))
            except (BadRequest, json.JSONDecodeError, UnicodeDecodeError) as e:
                self._answer(400, {"error": str(e)})
            except Unavailable as e:
                self._answer(503, {"error": str(e)})
            except Exception as e:  # a bug or a model failure: the server stays up, the client is told
                log.exception("request failed")
                self._answer(500, {"error": f"{type(e).__name__}: {e}"})

        def log_message(self, fmt, *args):
            log.debug("%s " + fmt, self.address_string(), *args)

    return ThreadingHTTPServer((host, port), Handler)
