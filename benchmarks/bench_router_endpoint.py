"""`laser serve-router` under load: requests per second and latency with N concurrent clients, the latency the
endpoint adds over scoring the same batch in-process, and a reward server killed mid-run.

The endpoint serves the quick world's three reward models (in-process) behind the kernel router; each request is
an OpenRLHF batch of `--batch` responses to distinct training prompts (distinct texts, so no score is served from
an RM's cache). For the fault run the first RM is remote: a second endpoint serving the `strings` judge alone,
shut down halfway through the requests.

    python benchmarks/bench_router_endpoint.py            # about a minute on 2 cores
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/get_reward", json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _batches(suite, n: int, size: int, salt: str) -> list[dict]:
    out = []
    for k in range(n):
        exs = [suite.train[(k * size + i) % len(suite.train)] for i in range(size)]
        prompts = [ex.prompt for ex in exs]
        out.append({"query": [p + f" {ex.answer}{salt}{k}" for p, ex in zip(prompts, exs, strict=True)],
                    "prompts": prompts})
    return out


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--requests", type=int, default=48, help="requests per load level (48)")
    ap.add_argument("--batch", type=int, default=16, help="responses per request (16)")
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from laser.assets import build_assets, quick_recipe
    from laser.generation import make_embedder
    from laser.integrations.endpoint import RoutingService, make_server
    from laser.integrations.routed import RoutedReward
    from laser.rewards import load_reward_model
    from laser.strategies import make_strategy

    assets = build_assets(quick_recipe(), progress=False)
    suite = assets.suite()
    embedder = make_embedder(AutoModelForCausalLM.from_pretrained(assets.policy),
                             AutoTokenizer.from_pretrained(assets.policy))
    lineup, _ = assets.lineup()

    def rms():
        return {n: load_reward_model(k, str(p)) for n, (k, p) in lineup.items()}

    def routed(models, spec="laser"):
        strategy = make_strategy("laser", list(models), dim=embedder.dim, seed=0, center=True,
                                 normalize_feedback=False) if spec == "laser" else make_strategy(spec, list(models))
        return RoutedReward(models, strategy, embedder)

    def serve(service):
        server = make_server(service)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    # In-process: the same kind of batch scored by RoutedReward alone, one at a time (no HTTP, no queue).
    direct = routed(rms())
    alone = []
    for k, body in enumerate(_batches(suite, 20, args.batch, "d")):  # the first 4 warm the models up, untimed
        t = time.perf_counter()
        direct.score(body["prompts"], [q[len(p):] for q, p in zip(body["query"], body["prompts"], strict=True)])
        if k >= 4:
            alone.append(time.perf_counter() - t)
    base = float(np.median(alone))
    rows = [f"In-process RoutedReward.score of one batch of {args.batch}: median {base * 1000:.0f} ms.", "",
            "| clients | requests | requests/s | p50 latency ms | p99 latency ms | p50 added over in-process ms | "
            "errors |", "|---|---|---|---|---|---|---|"]
    for n in args.clients:
        service = RoutingService(routed(rms()))
        server, url = serve(service)
        bodies = _batches(suite, args.requests, args.batch, f"c{n}")
        lat, codes, lock = [], [], threading.Lock()

        def client(i, url=url, bodies=bodies, lat=lat, codes=codes, lock=lock, n=n):
            for body in bodies[i::n]:
                t = time.perf_counter()
                code, _ = _post(url, body)
                with lock:
                    lat.append(time.perf_counter() - t)
                    codes.append(code)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        server.shutdown()
        server.server_close()
        p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
        rows.append(f"| {n} | {len(lat)} | {len(lat) / wall:.1f} | {p50 * 1000:.0f} | {p99 * 1000:.0f} | "
                    f"{(p50 - base) * 1000:.0f} | {sum(c != 200 for c in codes)} |")
    # A reward server killed halfway: its prompts go to the next RM, every request is answered.
    models = rms()
    backend = RoutingService(RoutedReward({"strings": models["strings"]}, make_strategy("single:strings", ["strings"]),
                                          embedder))
    back, back_url = serve(backend)
    remote = load_reward_model("remote", back_url + "/get_reward", name="remote", protocol="openrlhf", retries=1,
                               backoff=0.05, timeout=10)
    front = RoutingService(routed({"remote": remote, **models}, spec="single:remote"))
    server, url = serve(front)
    before, after, codes = [], [], []
    for k, body in enumerate(_batches(suite, 24, args.batch, "k")):
        if k == 12:
            back.shutdown()
            back.server_close()
        t = time.perf_counter()
        code, _ = _post(url, body)
        (before if k < 12 else after).append(time.perf_counter() - t)
        codes.append(code)
    stats = front.stats()
    server.shutdown()
    server.server_close()
    rows += ["", f"Remote reward server killed after 12 of 24 requests (every prompt routed to it): "
                 f"{sum(c == 200 for c in codes)} of 24 answered 200; prompts rerouted {stats['rerouted']}; "
                 f"p50 latency {np.median(before) * 1000:.0f} ms before, {np.median(after) * 1000:.0f} ms after "
                 f"(a connection refused, then the next RM)."]
    text = "\n".join(rows)
    print(f"# laser serve-router under load (quick world, {args.batch} responses a request)\n\n"
          f"Command: `python benchmarks/bench_router_endpoint.py {' '.join(sys.argv[1:])}`\n\n{text}")


if __name__ == "__main__":
    main()
