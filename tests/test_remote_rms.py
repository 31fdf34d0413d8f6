"""Remote reward models against stub servers (the standard library's HTTP server): both protocols, retries,
failures that become unscorable rows, 4xx and dead URLs refused by name, remote RMs asked at the same time.
The real vLLM pooling server is exercised in test_remote_vllm.py."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from laser.config import ConfigError, RunConfig, load_config
from laser.rewards import ScoringUnavailable, load_reward_model
from laser.rewards.remote import RemoteRM, RemoteRMError


def score_of(text: str) -> float:
    return len(text) / 10 - 1.0


class Stub:
    """A stub RM server; `fail` (a list of HTTP codes, popped per scoring request) injects failures."""

    def __init__(self, protocol="vllm", models=("rm",), fail=(), barrier=None):
        self.protocol, self.models, self.fail, self.barrier = protocol, list(models), list(fail), barrier
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body):
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                if self.path == "/health":
                    return self._send(200, {})
                if self.path == "/v1/models":
                    return self._send(200, {"data": [{"id": m} for m in stub.models]})
                self._send(404, {"error": "no such path"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, **body})
                if stub.barrier is not None:
                    try:
                        stub.barrier.wait(timeout=10)
                    except threading.BrokenBarrierError:
                        return self._send(503, {"error": "asked one after the other"})
                if stub.fail:
                    code = stub.fail.pop(0)
                    return self._send(code, {"error": f"injected {code}"})
                if stub.protocol == "vllm":
                    if body.get("model") not in stub.models:
                        return self._send(404, {"error": f"model {body.get('model')} does not exist"})
                    data = [{"index": i, "label": None, "probs": [score_of(t), 7.0], "num_classes": 2}
                            for i, t in enumerate(body["input"])]
                    return self._send(200, {"data": data[::-1]})  # answered out of order: indices decide
                self._send(200, {"rewards": [score_of(q) for q in body["query"]]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub(request):
    servers = []

    def make(**kw):
        servers.append(Stub(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


PROMPTS = ["Add 2 and 3.", "Reverse abc.", "Add 2 and 3."]
COMPLETIONS = ["5", "cba", "six"]


@pytest.mark.parametrize("protocol", ["vllm", "openrlhf"])
def test_remote_rm_scores_through_its_server_with_the_cache(stub, protocol):
    s = stub(protocol=protocol)
    url = s.url if protocol == "vllm" else s.url + "/get_reward"
    rm = load_reward_model("remote", url, name="judge", protocol=protocol)
    got = rm.score(PROMPTS, COMPLETIONS)
    assert np.allclose(got.values, [score_of(p + c) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)])
    assert got.forward == 3 and got.n_unscorable == 0
    n = len(s.requests)
    again = rm.score(PROMPTS[:2], COMPLETIONS[:2])
    assert np.allclose(again.values, got.values[:2]) and again.cache_hits == 2 and len(s.requests) == n
    if protocol == "vllm":
        req = s.requests[-1]
        assert req["model"] == "rm" and req["use_activation"] is False and req["path"] == "/classify"
    else:
        req = s.requests[-1]
        assert req["prompts"] == PROMPTS and req["query"] == [p + c for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]


def test_remote_rm_head_picks_an_output_and_a_bad_head_is_refused(stub):
    s = stub()
    rm = RemoteRM(s.url, name="multi", head=1)
    assert np.allclose(rm.score(["p"], ["c"]).values, [7.0])
    with pytest.raises(RemoteRMError, match="head=2"):
        RemoteRM(s.url, name="multi", head=2).score(["p"], ["c"])


def test_transient_failures_are_retried_with_backoff(stub):
    s = stub(fail=[503, 502])
    rm = RemoteRM(s.url, name="flaky", retries=3, backoff=0.01)
    got = rm.score(PROMPTS, COMPLETIONS)
    assert got.n_unscorable == 0 and len(s.requests) == 3  # two failures, then the answer
    assert rm.stats.errors == []


def test_a_server_down_after_its_retries_makes_the_batch_unscorable_not_a_crash(stub):
    s = stub(fail=[500] * 10)
    rm = RemoteRM(s.url, name="down", retries=2, backoff=0.01)
    got = rm.score(PROMPTS, COMPLETIONS)
    assert got.n_unscorable == 3 and np.isnan(got.values).all()
    assert len(s.requests) == 3  # 1 + 2 retries for the whole batch, not again row by row
    assert rm.stats.unscorable == 3 and len(rm.stats.errors) == 1 and "after 3 attempt(s)" in rm.stats.errors[0]
    assert rm.failed_batches == 1
    s.fail.clear()  # the server is back: nothing unscorable was cached
    assert rm.score(PROMPTS, COMPLETIONS).n_unscorable == 0


def test_a_killed_server_mid_run_gives_unscorable_rows_and_a_named_error_at_the_next_start(stub):
    s = stub()
    rm = RemoteRM(s.url, name="judge", retries=1, backoff=0.01, timeout=2)
    assert rm.score(PROMPTS[:1], COMPLETIONS[:1]).n_unscorable == 0
    s.close()
    got = rm.score(PROMPTS[1:], COMPLETIONS[1:])
    assert got.n_unscorable == 2 and rm.stats.unscorable == 2
    with pytest.raises(RemoteRMError, match=r"reward model judge: http://127\.0\.0\.1:\d+ does not answer"):
        RemoteRM(s.url, name="judge", retries=0)


def test_a_4xx_fails_fast_and_names_the_rm_and_url(stub):
    s = stub(fail=[422])
    rm = RemoteRM(s.url, name="picky", retries=5, backoff=0.01)
    with pytest.raises(RemoteRMError, match=r"reward model picky: http://127\.0\.0\.1:\d+/classify answered HTTP 422"):
        rm.score(PROMPTS, COMPLETIONS)
    assert len(s.requests) == 1  # no retries


def test_the_served_model_is_checked_at_start(stub):
    s = stub(models=("a", "b"))
    with pytest.raises(RemoteRMError, match=r"serves \['a', 'b'\]; set `model`"):
        RemoteRM(s.url, name="x")
    with pytest.raises(RemoteRMError, match=r"not 'c'"):
        RemoteRM(s.url, name="x", model="c")
    assert RemoteRM(s.url, name="x", model="b").model == "b"


def test_a_dead_url_is_refused_at_start_by_name():
    with pytest.raises(RemoteRMError, match=r"reward model math: http://127\.0\.0\.1:9 does not answer"):
        load_reward_model("remote", "http://127.0.0.1:9", name="math", retries=0)


def test_remote_rms_of_one_batch_are_asked_at_the_same_time(stub):
    """Each stub answers only once both requests have arrived (a barrier of 2): asked one after the other, the
    first would wait, be refused (503, no retries) and its rows come back unscorable."""
    from laser.strategies import make_strategy
    from laser.strategies.base import Batch
    from laser.strategies.scoring import CandidateTable, route_and_score

    barrier = threading.Barrier(2)
    a, b = stub(barrier=barrier), stub(barrier=barrier)
    rms = {"a": RemoteRM(a.url, name="a", retries=0), "b": RemoteRM(b.url, name="b", retries=0)}
    strategy = make_strategy("ensemble:mean", ["a", "b"], dim=2)
    table = CandidateTable.of(["p1", "p2"], [["x", "yy"], ["zzz", "w"]])
    routed = route_and_score(strategy, rms, lambda name, v: np.asarray(v), table, np.zeros((2, 2)),
                             Batch(round=0, domains=["d", "d"]))
    assert not np.isnan(routed.scores["a"]).any() and not np.isnan(routed.scores["b"]).any()
    assert routed.rm_calls == 8


def test_remote_config_keys_are_checked():
    cfg = RunConfig.model_validate({"models": {"embedded": None, "policy": "p", "reward_models": {
        "judge": {"kind": "remote", "url": "http://h:8000", "protocol": "vllm", "timeout": 5}}}})
    assert cfg.models.reward_models["judge"].url == "http://h:8000"
    for bad, msg in [({"kind": "remote"}, "needs `url`"), ({"kind": "remote", "url": "h:8000"}, "http://"),
                     ({"kind": "hf"}, "needs `path`"), ({"kind": "remote", "url": "http://h", "protocol": "grpc"},
                                                          "protocol")]:
        with pytest.raises(ConfigError, match=msg):
            load_config(None, ["models.embedded=null", "models.policy=p"] +
                        [f"models.reward_models.judge.{k}={v}" for k, v in bad.items()])


def test_scoring_unavailable_is_not_retried_row_by_row():
    """The base class's fault isolation splits a failing batch into rows, except for `ScoringUnavailable`."""
    from laser.rewards import RewardModel

    class Down(RewardModel):
        calls = 0

        def _score_batch(self, prompts, completions):
            Down.calls += 1
            raise ScoringUnavailable("server down")

    rm = Down("down")
    assert rm.score(["a", "b", "c"], ["1", "2", "3"]).n_unscorable == 3 and Down.calls == 1
