"""`laser serve-router` for real: the quick world's reward models behind one routed endpoint, asked in OpenRLHF's
exact format and through verl's reward-function signature, by concurrent clients, with a reward server killed
mid-run and bad requests answered 4xx with a reason."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from laser.generation import make_embedder
from laser.integrations import verl
from laser.integrations.endpoint import RoutingService, make_server
from laser.integrations.routed import RoutedReward
from laser.rewards import load_reward_model
from laser.strategies import make_strategy


@pytest.fixture(scope="module")
def world(quick_world):
    assets, _ = quick_world
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    tok = AutoTokenizer.from_pretrained(assets.policy)
    lineup, _ = assets.lineup()
    rms = {name: load_reward_model(kind, str(path)) for name, (kind, path) in lineup.items()}
    return assets, assets.suite(), make_embedder(model, tok), rms


def _serve(service):
    server = make_server(service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _post(url, body, path="/get_reward"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _get(url, path):
    with urllib.request.urlopen(url + path, timeout=30) as r:
        return json.loads(r.read())


def _router(world, rms=None, spec="laser"):
    _, _, embedder, loaded = world
    rms = rms or loaded
    if spec == "laser":
        return RoutedReward(rms, make_strategy("laser", list(rms), dim=embedder.dim, seed=0, center=True,
                                               normalize_feedback=False), embedder)
    return RoutedReward(rms, make_strategy(spec, list(rms)), embedder)


def test_openrlhf_and_verl_requests_are_routed_scored_and_taught_only_by_held_out_rows(world, tmp_path):
    assets, suite, _, _ = world
    service = RoutingService(_router(world), suite.validation, tmp_path / "router.safetensors", save_every=2)
    server, url = _serve(service)
    try:
        assert _get(url, "/health")["reward_models"] == list(service.reward.reward_models)
        train = suite.train[:6]
        prompts = [ex.prompt for ex in train for _ in range(2)]
        responses = [" " + ex.answer if j == 0 else " zz" for ex in train for j in range(2)]
        code, out = _post(url, {"query": [p + r for p, r in zip(prompts, responses, strict=True)],
                                "prompts": prompts, "labels": [ex.domain for ex in train for _ in range(2)]})
        assert code == 200 and len(out["rewards"]) == 12 and out["scores"] == out["rewards"]
        assert all(np.isfinite(out["rewards"]))
        shares = {k: v for k, v in out["extra_logs"].items() if k.startswith("router/share_")}
        assert set(shares) == {f"router/share_{rm}" for rm in service.reward.reward_models}
        assert all(sum(col[i] for col in shares.values()) == 1 for i in range(12))  # one RM per response
        # verl's signatures, through the same endpoint (the prompt travels in extra_info).
        got = verl.compute_score_batch([ex.domain for ex in train], [" " + ex.answer for ex in train],
                                       [ex.answer for ex in train], [{"prompt": ex.prompt} for ex in train], url=url)
        assert len(got) == 6 and all(np.isfinite(got))
        one = verl.compute_score(train[0].domain, " " + train[0].answer, train[0].answer,
                                 {"question": train[0].prompt}, url=url)
        assert np.isfinite(one)
        with pytest.raises(ValueError, match=r"extra_info\['prompt'\]"):
            verl.compute_score("strings", "x", "y", {}, url=url)
        stats = _get(url, "/stats")
        assert stats["requests"] == 3 and stats["router_updates"] == 0  # training queries teach nothing
        assert sum(stats["picks"].values()) == 6 + 6 + 1
        # Queries on held-out prompts, judged by their gold answers, teach the router; so do scored samples.
        val = [ex for ex in suite.validation[:8]]
        vp = [ex.prompt for _ in range(2) for ex in val]  # interleaved: each prompt's responses apart
        vr = [" " + ex.answer if j == 0 else " " + ex.answer[::-1] + "q" for j in range(2) for ex in val]
        code, out = _post(url, {"query": [p + r for p, r in zip(vp, vr, strict=True)], "prompts": vp})
        assert code == 200 and _get(url, "/stats")["router_updates"] == 8
        for i in range(8):  # a prompt's two responses were scored by the same RM
            assert [col[i] for col in out["extra_logs"].values()] == [col[i + 8] for col in out["extra_logs"].values()]
        code, out = _post(url, {"prompts": vp, "completions": vr, "correct": [j == 0 for j in range(2) for _ in val]},
                          path="/feedback")
        assert code == 200 and out["learned"] == 8 and _get(url, "/stats")["router_updates"] == 16
        # Bad requests: 4xx with the reason, and the server goes on.
        for body, reason in [({"query": ["ab"]}, "'prompts' is missing"),
                             ({"query": ["ab"], "prompts": ["x"]}, "does not start with its prompt"),
                             ({"query": ["ab", "ac"], "prompts": ["a"]}, "1 items for 2 queries"),
                             (b"{not json", "Expecting"), ([1, 2], "JSON object")]:
            code, out = _post(url, body)
            assert code == 400 and reason in out["error"], (body, out)
        code, out = _post(url, {"prompts": ["a"], "completions": ["b"], "correct": [1]}, path="/feedback")
        assert code == 400 and "booleans" in out["error"]
        assert _post(url, {}, path="/nope")[0] == 404
        assert _get(url, "/health")["status"] == "ok"
    finally:
        server.shutdown()
        server.server_close()
    # The state was saved as it served (every 2 requests): a new service starts from it.
    again = RoutingService(_router(world), suite.validation, tmp_path / "router.safetensors")
    assert again.requests in (4, 6) and again.updates >= 8 and again.resumed and again.stats()["prior"] is None
    # What an offline prior cost is kept with the state: a restarted endpoint still reports it.
    again.prior = {"prompts": 24, "informative": 9, "rm_forward": 70, "picks": {}}
    again.save()
    assert RoutingService(_router(world), suite.validation, tmp_path / "router.safetensors").stats()["prior"] == \
        {"prompts": 24, "informative": 9, "rm_forward": 70}


def test_concurrent_clients_each_get_their_own_answer_once(world):
    _, suite, _, _ = world
    service = RoutingService(_router(world), suite.validation)
    server, url = _serve(service)
    results, errors = {}, []

    def client(c):
        try:
            for k in range(4):
                exs = suite.train[40 * c + 4 * k: 40 * c + 4 * k + 4]
                prompts = [ex.prompt for ex in exs]
                code, out = _post(url, {"query": [p + " " + ex.answer for p, ex in zip(prompts, exs, strict=True)],
                                        "prompts": prompts})
                results[(c, k)] = (code, len(out["rewards"]))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    try:
        threads = [threading.Thread(target=client, args=(c,)) for c in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors and len(results) == 24 and set(results.values()) == {(200, 4)}
        stats = _get(url, "/stats")
        assert stats["requests"] == 24 and sum(stats["picks"].values()) == 24 * 4  # each answered once
    finally:
        server.shutdown()
        server.server_close()


def test_a_killed_reward_server_is_counted_and_its_queries_go_to_the_next_rm(world):
    """The front endpoint's first RM is remote: another endpoint serving the quick world's `strings` judge alone
    (OpenRLHF's protocol). Killed mid-run, its queries go to the next RM, and every request is still answered."""
    _, suite, embedder, rms = world
    backend = RoutingService(RoutedReward({"strings": rms["strings"]}, make_strategy("single:strings", ["strings"]),
                                          embedder))
    back_server, back_url = _serve(backend)
    remote = load_reward_model("remote", back_url + "/get_reward", name="remote", protocol="openrlhf", retries=0,
                               backoff=0.01, timeout=5)
    front = RoutingService(_router(world, {"remote": remote, **rms}, spec="single:remote"))
    server, url = _serve(front)
    try:
        def ask(i):
            exs = suite.train[100 + 4 * i: 104 + 4 * i]
            prompts = [ex.prompt for ex in exs]
            return _post(url, {"query": [p + " " + ex.answer for p, ex in zip(prompts, exs, strict=True)],
                               "prompts": prompts})

        assert ask(0)[0] == 200 and _get(url, "/stats")["rerouted"] == {}
        back_server.shutdown()
        back_server.server_close()
        for i in range(1, 4):
            code, out = ask(i)
            assert code == 200 and len(out["rewards"]) == 4 and all(np.isfinite(out["rewards"]))
        stats = _get(url, "/stats")
        assert stats["rerouted"] == {"remote": 12} and stats["requests"] == 4
        assert remote.stats.unscorable >= 12  # counted where it failed
    finally:
        server.shutdown()
        server.server_close()


def test_the_command_serves_a_run_config_until_sigterm_and_keeps_its_state(quick_world, tmp_path):
    import os
    import re
    import signal
    import subprocess
    import sys

    assets, _ = quick_world
    env = {**os.environ, "LASER_ASSETS_DIR": str(assets.root.parent)}
    state = tmp_path / "router.safetensors"
    proc = subprocess.Popen([sys.executable, "-m", "laser.cli", "serve-router", "--config", "configs/quick.yaml",
                             "--port", "0", "--state", str(state), "--prior", "24"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://[\d.]+:\d+", line).group(0)
        assert "3 reward models" in line and _get(url, "/health")["status"] == "ok"
        # The fresh router learned an offline prior before serving: every RM on each informative held-out row.
        prior = _get(url, "/stats")["prior"]
        assert prior["prompts"] == 24 and 0 < prior["informative"] <= 24 and prior["rm_forward"] > 0, prior
        assert "offline prior" in line and state.is_file()  # saved at once: a restart does not learn it again
        ex = assets.suite().train[0]
        code, out = _post(url, {"query": [ex.prompt + " " + ex.answer], "prompts": [ex.prompt]})
        assert code == 200 and len(out["rewards"]) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()[-2000:]
    assert state.is_file()  # saved at shutdown
    bad = subprocess.run([sys.executable, "-m", "laser.cli", "serve-router", "--config", str(tmp_path / "nope.yaml")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "laser serve-router:" in bad.stderr
