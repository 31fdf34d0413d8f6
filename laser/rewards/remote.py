"""Reward models served apart: a vLLM pooling server of a sequence classifier, or an OpenRLHF-style RM server.

`RemoteRM` is a `RewardModel` like the in-process ones (same cache, normalizers and NaN path); only
`_score_batch` goes over HTTP (the standard library's client, JSON bodies):

- `protocol="vllm"`: `POST {url}/classify` with `{"model", "input": [texts], "use_activation": false}`;
  the raw logit of output `head` is `data[i].probs[head]` (without `use_activation: false` vLLM applies a
  sigmoid to one-label heads). Start the server with `laser serve-rms`, or by hand:
  `python -m vllm.entrypoints.openai.api_server --model DIR --runner pooling --convert classify`.
- `protocol="openrlhf"`: `POST {url}` with `{"query": [prompt + completion], "prompts": [...],
  "labels": [...]}`, answered by `{"rewards": [...]}` (OpenRLHF's `--remote_rm_url` convention).

Failures: connection errors, timeouts and 5xx answers are retried with exponential backoff; a batch that
still fails becomes unscorable at once (`ScoringUnavailable`: NaN, counted, the round goes on); a 4xx
answer is the caller's mistake (a wrong model name, a malformed request) and raises `RemoteRMError`,
which names the RM and the URL, without retries. `check()` (run when the RM is made) refuses a server
that does not answer, by name.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import numpy as np

from .base import RewardModel, RewardModelFailed, ScoringUnavailable
from .texts import classifier_texts

log = logging.getLogger(__name__)

PROTOCOLS = ("vllm", "openrlhf")


class RemoteRMError(RewardModelFailed):
    """A remote reward model that cannot be used as configured (no answer at start, a 4xx, a bad reply)."""


class _Transient(Exception):
    """A failure worth retrying (connection refused or reset, timeout, 5xx)."""


class RemoteRM(RewardModel):
    """A reward model behind an HTTP server; see the module docstring for the two protocols."""

    remote = True  # the round asks remote RMs at the same time (`route_and_score`)

    def __init__(self, url: str, name: str, protocol: str = "vllm", model: str | None = None,
                 tokenizer: str | None = None, head: int = 0, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5, batch_size: int = 64, cache_size: int | None = 1_000_000,
                 check: bool = True):
        super().__init__(name, batch_size, cache_size)
        if protocol not in PROTOCOLS:
            raise RemoteRMError(f"reward model {name}: unknown protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
        self.url, self.protocol, self.model, self.head = url.rstrip("/"), protocol, model, head
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.failed_batches = 0  # batches that stayed unanswered after the retries
        self._tokenizer = None
        if tokenizer:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        if check:
            self.check()

    # --- the protocols ---------------------------------------------------------------------------------------

    def check(self) -> None:
        """Ask the server once; `RemoteRMError` naming this RM and its URL if it does not answer as expected."""
        try:
            if self.protocol == "vllm":
                self._request("GET", "/health", None, retries=0)
                models = [m["id"] for m in self._request("GET", "/v1/models", None, retries=0).get("data", [])]
                if self.model is None:
                    if len(models) != 1:
                        raise RemoteRMError(f"reward model {self.name}: {self.url} serves {models}; set `model`")
                    self.model = models[0]
                elif self.model not in models:
                    raise RemoteRMError(f"reward model {self.name}: {self.url} serves {models}, not {self.model!r}")
            else:
                got = self._post_openrlhf(["?"], ["?"], retries=0)
                if len(got) != 1:
                    raise RemoteRMError(f"reward model {self.name}: {self.url} answered {len(got)} rewards for 1 input")
        except (_Transient, ScoringUnavailable) as e:
            raise RemoteRMError(f"reward model {self.name}: {self.url} does not answer ({e}); start its server "
                                "(`laser serve-rms`) or fix `url`") from None

    def texts(self, prompts: Sequence[str], completions: Sequence[str]) -> list[str]:
        """The strings sent: those the in-process `hf` backend scores when the tokenizer is known."""
        if self._tokenizer is not None:
            return classifier_texts(self._tokenizer, prompts, completions)
        return [p + c for p, c in zip(prompts, completions, strict=True)]

    def _score_batch(self, prompts: list[str], completions: list[str]) -> tuple[np.ndarray, int]:
        if self.protocol == "openrlhf":
            return np.asarray(self._post_openrlhf(prompts, completions), dtype=np.float64), 0
        # Inputs longer than the server's context keep their end, as in the `hf` backend (the score is read at
        # the last token); without truncation vLLM refuses the whole batch with a 400.
        body = {"model": self.model, "input": self.texts(prompts, completions), "use_activation": False,
                "truncate_prompt_tokens": -1, "truncation_side": "left"}
        if self._tokenizer is not None and getattr(self._tokenizer, "chat_template", None) is not None:
            body["add_special_tokens"] = False  # the chat template wrote them, as in the `hf` backend
        data = self._request("POST", "/classify", body).get("data")
        if not isinstance(data, list) or len(data) != len(prompts):
            raise RemoteRMError(f"reward model {self.name}: {self.url}/classify answered "
                                f"{len(data) if isinstance(data, list) else data!r} items for {len(prompts)} inputs")
        out = np.full(len(prompts), np.nan)
        for item in data:
            probs = item["probs"]
            if self.head >= len(probs):
                raise RemoteRMError(f"reward model {self.name}: head={self.head} but the server's model has "
                                    f"{len(probs)} output(s)")
            out[item["index"]] = probs[self.head]
        return out, 0

    def _post_openrlhf(self, prompts: Sequence[str], completions: Sequence[str], retries: int | None = None):
        body = {"query": [p + c for p, c in zip(prompts, completions, strict=True)], "prompts": list(prompts),
                "labels": [""] * len(prompts)}
        got = self._request("POST", "", body, retries=retries)
        rewards = got.get("rewards") if isinstance(got, dict) else None
        if not isinstance(rewards, list) or len(rewards) != len(prompts):
            raise RemoteRMError(f"reward model {self.name}: {self.url} answered {got!r:.200} where "
                                f"{{'rewards': [{len(prompts)} numbers]}} was expected")
        return [float("nan") if r is None else float(r) for r in rewards]

    # --- HTTP ------------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict | None, retries: int | None = None) -> dict:
        """One JSON request with retries on transient failures; `ScoringUnavailable` when they run out."""
        retries = self.retries if retries is None else retries
        url = self.url + path
        data = None if body is None else json.dumps(body).encode()
        delay = self.backoff
        for attempt in range(retries + 1):
            try:
                return self._once(method, url, data)
            except _Transient as e:
                if attempt == retries:
                    self.failed_batches += 1
                    raise ScoringUnavailable(f"{url}: {e} (after {retries + 1} attempt(s))") from None
                log.warning("reward model %s: %s: %s; retrying in %.1f s", self.name, url, e, delay)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _once(self, method: str, url: str, data: bytes | None) -> dict:
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:300]
            if e.code >= 500:
                raise _Transient(f"HTTP {e.code}: {detail}") from None
            raise RemoteRMError(f"reward model {self.name}: {url} answered HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            raise _Transient(str(getattr(e, "reason", e))) from None
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise RemoteRMError(f"reward model {self.name}: {url} answered non-JSON: {raw[:200]!r}") from None
