"""verl's custom reward function, routed: `compute_score` asks `laser serve-router` to score each response.

In verl's config (`custom_reward_function.path` is this file, `.name` the function):

    custom_reward_function:
      path: .../laser/integrations/verl.py   # python -c "import laser.integrations.verl as m; print(m.__file__)"
      name: compute_score          # verl's naive reward manager: one response a call
      # name: compute_score_batch  # reward_model.reward_manager=batch: the whole batch in one request

The endpoint's address comes from `LASER_ROUTER_URL` (default http://127.0.0.1:8000). verl does not hand a reward
function the prompt, and the router routes by it: put the prompt in each row's `extra_info["prompt"]` (verl's data
preprocessing scripts write `extra_info`; `"question"` is read too). `data_source` is sent as the row's label, so
the endpoint's stats count picks per data source. `compute_score_async` is the batch call for asyncio callers.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence

DEFAULT_URL = "http://127.0.0.1:8000"


def _prompt(extra_info) -> str:
    info = extra_info if isinstance(extra_info, dict) else {}
    for key in ("prompt", "question"):
        if isinstance(info.get(key), str):
            return info[key]
    raise ValueError("the routed reward needs each row's prompt: put it in extra_info['prompt'] (verl passes a "
                     "reward function no prompt of its own)")


def _post(body: dict, url: str | None, timeout: float) -> dict:
    url = (url or os.environ.get("LASER_ROUTER_URL") or DEFAULT_URL).rstrip("/") + "/get_reward"
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{url} answered {e.code}: {e.read().decode(errors='replace')}") from None


def compute_score_batch(data_sources: Sequence[str], solution_strs: Sequence[str], ground_truths: Sequence,
                        extra_infos: Sequence | None = None, url: str | None = None, timeout: float = 300.0,
                        **_) -> list[float]:
    """verl's batch signature: one routed reward per response, from one request."""
    extra_infos = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    prompts = [_prompt(x) for x in extra_infos]
    body = {"query": [p + s for p, s in zip(prompts, solution_strs, strict=True)], "prompts": prompts,
            "labels": [str(d) for d in data_sources]}
    return [float(r) for r in _post(body, url, timeout)["rewards"]]


def compute_score(data_source: str, solution_str: str, ground_truth=None, extra_info=None, url: str | None = None,
                  timeout: float = 300.0, **_) -> float:
    """verl's per-response signature."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], url, timeout)[0]


async def compute_score_async(data_sources, solution_strs, ground_truths, extra_infos=None, url: str | None = None,
                              timeout: float = 300.0, **_) -> list[float]:
    """`compute_score_batch` without blocking the event loop."""
    return await asyncio.to_thread(compute_score_batch, data_sources, solution_strs, ground_truths, extra_infos,
                                   url, timeout)
