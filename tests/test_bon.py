"""Best-of-n: `rerank` on known scores, bad input, and `laser bon` with real models on the quick world."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from laser.bon import BonError, BonInputError, PromptRow, choice_feedback, read_prompts, rerank
from laser.cli import main
from laser.generation import Candidates, Sample
from laser.rewards import FunctionRM
from laser.statefile import load_state
from laser.strategies import make_strategy
from laser.training.checkpoints import TRAINER_STATE


def _rms():
    """Two real function RMs that disagree: `longest` likes long answers, `digits` likes digit-only ones."""
    longest = FunctionRM(lambda prompts, completions: [float(len(c)) for c in completions], name="longest")
    digits = FunctionRM(lambda prompts, completions: [float(c.strip().isdigit()) for c in completions], name="digits")
    return {"longest": longest, "digits": digits}


PROMPTS = ["Q: 2+2? A:", "Q: name a color A:", "Q: one? A:"]
CANDS = [[" 4", " four, I think", " 5"], [" red", " a deep blue colour"], [" 1"]]


def test_single_rm_rerank_keeps_each_rms_favourite_and_costs_one_pass_per_candidate():
    rms = _rms()
    out = rerank(PROMPTS, CANDS, make_strategy("single:longest", list(rms)), rms)
    assert out.texts == [" four, I think", " a deep blue colour", " 1"]
    assert [c.rms for c in out] == [("longest",), ("longest",), ()]     # one candidate: nothing to judge
    assert out.rm_calls == 5 and out.forward == 5                      # 3 + 2 candidates, the single one free
    assert set(out[0].rm_scores) == {"longest"} and out[2].scores == [None]
    out = rerank(PROMPTS, CANDS, make_strategy("single:digits", list(rms)), rms)
    assert out.indices == [0, 0, 0]                                     # " 4" ties " 5": the first drawn


def test_ensemble_asks_every_rm_and_combines_normalized_scores():
    rms = _rms()
    out = rerank(PROMPTS[:1], [[" 4", " 44444444", " four"]], make_strategy("ensemble:mean", list(rms)), rms)
    assert out.rm_calls == 6 and out[0].rms == ("longest", "digits")
    assert out.texts == [" 44444444"]                                   # long and all digits: best on both
    z = {rm: np.array(v) for rm, v in out[0].rm_scores.items()}
    assert np.allclose(out[0].scores, (z["longest"] + z["digits"]) / 2)


def test_ties_go_to_the_most_often_drawn_candidate():
    rms = _rms()
    group = [Sample(" 3", (1,), "stop", -1.0, 1), Sample(" 7", (2,), "stop", -1.0, 5)]
    out = rerank(["Q: x? A:"], Candidates(["Q: x? A:"], [group]), make_strategy("single:digits", list(rms)), rms)
    assert out[0].index == 1 and out[0].text == " 7"


def test_oracle_routes_by_domain_and_laser_needs_contexts():
    rms = _rms()
    table = {"longest": {"chat": 0.9, "math": 0.4}, "digits": {"chat": 0.5, "math": 0.95}}
    oracle = make_strategy("oracle", list(rms), oracle_table=table)
    out = rerank(PROMPTS[:2], CANDS[:2], oracle, rms, domains=["math", "chat"])
    assert [c.rms for c in out] == [("digits",), ("longest",)]
    assert out.texts == [" 4", " a deep blue colour"]
    laser = make_strategy("laser", list(rms), dim=4)
    with pytest.raises(BonError, match="needs the prompts' contexts"):
        rerank(PROMPTS, CANDS, laser, rms)
    out = rerank(PROMPTS, CANDS, laser, rms, contexts=np.eye(3, 4))
    assert all(len(c.rms) == 1 for c in out[:2]) and out.rm_calls == 5
    with pytest.raises(BonError, match="reward models given"):
        rerank(PROMPTS, CANDS, make_strategy("random", ["longest", "other"]), rms)
    with pytest.raises(BonError, match="no candidates"):
        rerank(PROMPTS[:1], [[]], make_strategy("random", list(rms)), rms)
    with pytest.raises(BonError, match="3 prompts and 2 candidate lists"):
        rerank(PROMPTS, CANDS[:2], make_strategy("random", list(rms)), rms)


def test_online_router_learns_which_rm_to_trust_from_gold_feedback():
    """Two kinds of prompt (contexts e0, e1); `digits` is right on math prompts, `longest` on chat prompts.
    With gold feedback on the chosen answers, LinUCB ends up asking the right RM for each kind."""
    rms = _rms()
    strategy = make_strategy("laser", list(rms), dim=2, seed=0)
    rng = np.random.default_rng(0)
    late = []
    for step in range(30):
        kinds = rng.integers(2, size=16)
        prompts = [f"Q{step}-{i}" for i in range(16)]
        cands = [[" 12", " twelve or so", " 7"] if k == 0 else [" 3", " a long kind answer"] for k in kinds]
        contexts = np.eye(2)[kinds]
        out = rerank(prompts, cands, strategy, rms, contexts=contexts)
        right = np.array([t.strip().isdigit() if k == 0 else len(t) > 5 for t, k in zip(out.texts, kinds, strict=True)])
        strategy.observe(contexts, out.assignment, right.astype(float))
        if step >= 20:
            late.append(right.mean())
    assert np.mean(late) > 0.9


def test_feedback_signals():
    rows = [PromptRow("a", "Q: 1+1=? A:", "2", "arithmetic", "integer"), PromptRow("b", "Q: hi A:")]
    chosen = [Sample(" 2", (5, 6, 7, 8), "stop", -2.0), Sample(" hello", (9, 10), "stop", -3.0)]
    v, ok = choice_feedback("nll", chosen, rows)
    assert ok.all() and np.allclose(v, [-0.5, -1.5])                  # mean token log-probability
    v, ok = choice_feedback("gold", chosen, rows)
    assert ok.tolist() == [True, False] and v[0] == 1.0               # no answer, no gold feedback
    assert not choice_feedback("none", chosen, rows)[1].any()


def test_bad_prompt_rows_name_the_line_or_are_skipped(tmp_path):
    f = tmp_path / "in.jsonl"
    good = json.dumps({"prompt": "Q: 1+1=? A:", "answer": 2, "answer_format": "integer"})
    cases = {
        json.dumps({"answer": "x"}): ":2: field 'prompt' is missing",
        json.dumps({"prompt": "  "}): ":2: field 'prompt' is empty",
        "{not json": ":2: not valid JSON",
        json.dumps(["a list"]): ":2: expected a JSON object",
        json.dumps({"prompt": "p", "answer_format": "roman"}): ":2: answer_format 'roman' is unknown",
        json.dumps({"prompt": ["p"]}): ":2: field 'prompt' must be a string",
        json.dumps({"id": "1", "prompt": "p"}): ":2: id '1' is already used on line 1",
    }
    for bad, msg in cases.items():
        f.write_text(good + "\n" + bad + "\n")
        with pytest.raises(BonInputError, match=msg):
            read_prompts(f)
    f.write_bytes(good.encode() + b"\n" + b'{"prompt": "caf\xe9"}\n\n' + good.encode() + b"\n")
    with pytest.raises(BonInputError, match=":2: not valid UTF-8"):
        read_prompts(f)
    rows, skipped = read_prompts(f, skip_bad_rows=True)
    assert [r.id for r in rows] == ["1", "4"] and rows[0].answer == "2" and rows[0].example() is not None
    assert [s["line"] for s in skipped] == [2] and "UTF-8" in skipped[0]["error"]
    with pytest.raises(BonInputError, match="no such file"):
        read_prompts(tmp_path / "missing.jsonl")


# --- `laser bon` with real models: the quick world's policy, judges and a LASeR router trained on it ------------

@pytest.fixture(scope="module")
def trained(quick_world, tmp_path_factory):
    """A 2-round LASeR run on the quick world (its checkpoint holds the router) and a prompts file."""
    from laser.config import load_config
    from laser.training.run import train

    assets, _ = quick_world
    mp = pytest.MonkeyPatch()
    mp.setenv("LASER_ASSETS_DIR", str(assets.root.parent))
    root = tmp_path_factory.mktemp("bon")
    config = load_config(None, ["models.embedded=quick", "name=r", f"output_dir={root}", "rounds=2", "eval_every=2",
                                "round.prompts_per_round=8", "round.n=4", "round.feedback_examples=16",
                                "tasks.test_per_domain=8", "engine.max_model_len=128"])
    train(config, progress=False)
    test = list(assets.suite().test)
    rng = np.random.default_rng(0)
    rows = [test[i] for i in rng.permutation(len(test))[:24]]
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": ex.id, "prompt": ex.prompt, "answer": ex.answer, "domain": ex.domain,
                                           "answer_format": ex.answer_format}) + "\n" for ex in rows))
    yield root / "r", prompts, assets
    mp.undo()


def _bon(args, capsys):
    rc = main(["bon", "--quiet", "--n", "4", "--max-new-tokens", "12", "--batch-size", "8", *args])
    return rc, capsys.readouterr()


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_laser_bon_with_a_frozen_router_streams_resumes_and_compares(trained, tmp_path, capsys):
    run, prompts, assets = trained
    out = tmp_path / "out.jsonl"
    rc, io = _bon(["--router", str(run), "--input", str(prompts), "--out", str(out)], capsys)
    assert rc == 0, io.err
    rows = _rows(out)
    assert len(rows) == 24 and len({r["id"] for r in rows}) == 24
    for r in rows:
        assert 1 <= r["n_distinct"] <= 4 and 0 <= r["index"] < r["n_distinct"]
        assert len(r["rms"]) == (1 if r["n_distinct"] > 1 else 0)        # LASeR: one RM per prompt
        assert r["rm_calls"] == len(r["rms"]) * r["n_distinct"] and isinstance(r["correct"], bool)
        assert "feedback" not in r                                     # frozen
    assert f"24 rows, best-of-4 with laser: {sum(r['rm_calls'] for r in rows)} RM scorings" in io.out
    assert "accuracy" in io.out
    # Frozen: the router in the state file is the one the run trained.
    ckpt = load_state(run / "checkpoints" / "round-000002" / TRAINER_STATE)
    state = load_state(tmp_path / "out.jsonl.state.safetensors")
    for k, v in ckpt["strategy"]["policy"]["state"].items():
        assert np.array_equal(np.asarray(v), np.asarray(state["strategy"]["policy"]["state"][k])), k

    # A crash after the first batch (its rows and router state saved), in the middle of writing the next row:
    # --resume redoes only the rest, exactly as the uninterrupted run did.
    part, first = tmp_path / "part.jsonl", tmp_path / "first8.jsonl"
    first.write_text("".join(prompts.read_text().splitlines(keepends=True)[:8]))
    assert _bon(["--router", str(run), "--input", str(first), "--out", str(part)], capsys)[0] == 0
    with open(part, "a") as f:
        f.write(out.read_text().splitlines(keepends=True)[8][:20])
    rc, io = _bon(["--router", str(run), "--input", str(prompts), "--out", str(part)], capsys)
    assert rc == 2 and "already exists; pass --resume" in io.err
    rc, io = _bon(["--router", str(run), "--input", str(prompts), "--out", str(part), "--resume"], capsys)
    assert rc == 0, io.err
    assert _rows(part) == rows

    # The baselines are one flag away; an ensemble asks all K=3 RMs, the oracle the best one per domain.
    ens = tmp_path / "ens.jsonl"
    assert _bon(["--router", str(run), "--strategy", "ensemble:mean", "--input", str(prompts), "--out", str(ens)],
                capsys)[0] == 0
    e = _rows(ens)
    assert [r["response"] for r in e if r["n_distinct"] == 1] == [r["response"] for r in rows if r["n_distinct"] == 1]
    assert all(len(r["rms"]) == 3 for r in e if r["n_distinct"] > 1)
    assert sum(r["rm_calls"] for r in e) == 3 * sum(r["rm_calls"] for r in rows)  # same samples, K x the passes
    orc = tmp_path / "oracle.jsonl"
    assert _bon(["--router", str(run), "--strategy", "oracle", "--input", str(prompts), "--out", str(orc)],
                capsys)[0] == 0
    table = assets.lineup()[1]
    for r in _rows(orc):
        if r["rms"]:
            assert r["rms"] == [max(table, key=lambda rm: table[rm].get(r["domain"], -1))]


class _Trap:
    """Unpickling this creates `marker`: a stand-in for a pickle that runs an attacker's code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path(self.marker).touch, ())


def _plant_pickle(path, marker):
    """Write a torch checkpoint whose loading with weights_only=False runs code, and prove that it would."""
    torch.save({"round": _Trap(marker)}, path)
    proof = marker.with_name(marker.name + ".proof")
    torch.save({"round": _Trap(proof)}, path.with_name("proof.pt"))
    torch.load(path.with_name("proof.pt"), weights_only=False)
    assert proof.exists()                       # the trap is live: a loader that unpickles it would trip it
    path.with_name("proof.pt").unlink()


def test_a_planted_pickle_in_a_run_is_never_executed(trained, tmp_path, capsys):
    """`laser train --resume` and `laser bon --router` read the state file only; a `trainer.pt` is refused."""
    import shutil

    run, prompts, _ = trained
    copy = tmp_path / "shared-run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock"))
    ckpt = copy / "checkpoints" / (copy / "checkpoints" / "latest").read_text().strip()
    marker = tmp_path / "pwned"
    _plant_pickle(ckpt / "trainer.pt", marker)

    # Beside a state file, the pickle is ignored: the router loads from trainer_state.safetensors.
    out = tmp_path / "beside.jsonl"
    rc, io = _bon(["--router", str(copy), "--input", str(prompts), "--out", str(out)], capsys)
    assert rc == 0, io.err
    assert len(_rows(out)) == 24 and not marker.exists()

    # Alone (a checkpoint of the old pickle format, or a forged one), it is refused with the reason.
    (ckpt / TRAINER_STATE).unlink()
    rc, io = _bon(["--router", str(copy), "--input", str(prompts), "--out", str(tmp_path / "alone.jsonl")], capsys)
    assert rc == 2 and "trainer.pt" in io.err and "unpickling can run code" in io.err
    assert main(["train", "--quiet", "--resume", str(copy)]) == 2
    assert "unpickling can run code" in capsys.readouterr().err
    assert not marker.exists()

    # A damaged state file is an error that names it, not a crash.
    (ckpt / TRAINER_STATE).write_bytes(b"\x80\x04 not safetensors")
    assert main(["train", "--quiet", "--resume", str(copy)]) == 2
    assert f"{ckpt / TRAINER_STATE}: cannot read it as safetensors" in capsys.readouterr().err
    assert not marker.exists()


def test_laser_bon_online_learns_and_rejects_bad_input(trained, tmp_path, capsys):
    run, prompts, assets = trained
    policy = str(assets.policy)
    out = tmp_path / "online.jsonl"
    # A fresh router with an offline prior (held-out rows from a file, scored by every RM before the first batch),
    # then learning from the gold answers of the rows it serves.
    validation = tmp_path / "validation.jsonl"
    validation.write_text("".join(json.dumps({"prompt": ex.prompt, "answer": ex.answer, "domain": ex.domain,
                                              "answer_format": ex.answer_format}) + "\n"
                                  for ex in assets.suite().validation[:32]))
    rc, io = _bon(["--policy", policy, "--rms", _rms_spec(assets), "--strategy", "laser", "--feedback", "gold",
                   "--prior", "32", "--validation", str(validation), "--input", str(prompts), "--out", str(out)],
                  capsys)
    assert rc == 0, io.err
    rows = _rows(out)
    assert all(r["feedback"] == float(r["correct"]) for r in rows)
    told = int(re.search(r"offline prior: (\d+) informative of 32 held-out rows", io.err).group(1))
    state = load_state(tmp_path / "online.jsonl.state.safetensors")
    # Every RM on each informative held-out row, then the 24 online feedbacks.
    assert told > 0 and state["observed"] == 24 and len(state["strategy"]["feedback_history"]) == 3 * told + 24
    assert "router updated online from 24 feedbacks" in io.out
    nll = tmp_path / "nll.jsonl"
    assert _bon(["--policy", policy, "--rms", _rms_spec(assets), "--input", str(prompts), "--out", str(nll)],
                capsys)[0] == 0                                         # fresh laser router: nll by default
    assert all(-20 < r["feedback"] < 0 for r in _rows(nll))
    (tmp_path / "bad-validation.jsonl").write_text('{"prompt": "a", "answer": "b"}\nnot json\n')
    for flags, error in [(["--prior", "8"], "needs --validation"), (["--prior", "-1"], "--prior must be >= 0"),
                         (["--validation", str(validation)], "--validation is read by --prior only"),
                         (["--prior", "8", "--strategy", "random", "--validation", str(validation)],
                          "--prior teaches a laser router"),
                         (["--prior", "8", "--validation", str(tmp_path / "none.jsonl")], "none.jsonl"),
                         (["--prior", "8", "--validation", str(tmp_path / "bad-validation.jsonl")],
                          "bad-validation.jsonl:2")]:
        rc, io = _bon(["--policy", policy, "--rms", _rms_spec(assets), *flags, "--input", str(prompts),
                       "--out", str(tmp_path / "g.jsonl")], capsys)
        assert rc == 2 and error in io.err
    rc, io = _bon(["--router", str(run), "--prior", "8", "--input", str(prompts), "--out", str(tmp_path / "h.jsonl")],
                  capsys)
    assert rc == 2 and "--prior teaches a fresh router" in io.err

    # Bad input: a clear error naming the row or the option, or a counted skip with --skip-bad-rows.
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(prompts.read_bytes().splitlines(keepends=True)[0] + b'{"answer": "1"}\n' + b'{"prompt": "\xff"}\n')
    rc, io = _bon(["--router", str(run), "--input", str(bad), "--out", str(tmp_path / "b.jsonl")], capsys)
    assert rc == 2 and "bad.jsonl:2: field 'prompt' is missing" in io.err
    rc, io = _bon(["--router", str(run), "--input", str(bad), "--out", str(tmp_path / "b.jsonl"), "--skip-bad-rows"],
                  capsys)
    assert rc == 0 and len(_rows(tmp_path / "b.jsonl")) == 1 and "2 bad input row(s) skipped" in io.out
    side = _rows(tmp_path / "b.jsonl.skipped.jsonl")
    assert [s["line"] for s in side] == [2, 3] and "UTF-8" in side[1]["error"]
    rc, io = _bon(["--router", str(run), "--input", str(prompts), "--out", str(tmp_path / "c.jsonl"), "--n", "0"],
                  capsys)
    assert rc == 2 and "--n must be >= 1" in io.err
    rc, io = _bon(["--policy", policy, "--rms", f"a={tmp_path / 'nowhere'}", "--strategy", "single:a",
                   "--input", str(prompts), "--out", str(tmp_path / "d.jsonl")], capsys)
    assert rc == 2 and "reward model 'a'" in io.err and "does not exist" in io.err
    rc, io = _bon(["--router", str(run), "--strategy", "single:nope", "--input", str(prompts),
                   "--out", str(tmp_path / "e.jsonl")], capsys)
    assert rc == 2 and "no reward model named 'nope'" in io.err
    rc, io = _bon(["--router", str(tmp_path), "--input", str(prompts), "--out", str(tmp_path / "f.jsonl")], capsys)
    assert rc == 2 and "not a run directory" in io.err


def _rms_spec(assets):
    lineup, _ = assets.lineup()
    return ",".join(f"{n}={kind}:{path}" for n, (kind, path) in lineup.items())


def test_bon_flags_take_their_defaults_from_the_settings_model():
    from laser.cli import build_parser
    from laser.config import BonSettings

    args = build_parser().parse_args(["bon", "--input", "p.jsonl", "--out", "o.jsonl"])
    defaults = BonSettings()
    for name in BonSettings.model_fields:
        if name != "feedback":  # its default follows --router / --strategy (none when frozen, else nll)
            assert getattr(args, name) == getattr(defaults, name), name
    args = build_parser().parse_args(["bon", "--input", "p", "--out", "o", "--n", "4", "--top-p", "0.5",
                                      "--keep-candidates"])
    assert (args.n, args.top_p, args.keep_candidates) == (4, 0.5, True)
