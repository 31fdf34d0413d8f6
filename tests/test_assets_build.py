"""The embedded default: a reduced world built for real (TRL SFT + RewardTrainer), the cache and its atomicity."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_targets_afresh, hf_greedy_texts
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from laser.assets import AssetRecipe, JudgeSpec, RewardModelSpec, SFTSpec, SuiteSpec, build_assets, quick_recipe
from laser.assets import build as build_mod
from laser.assets.pairs import correctness_pairs, length_pairs, wrong_answer
from laser.tasks import Example, check, make_suite


@pytest.fixture(scope="module")
def world(quick_world):
    return quick_world


def test_build_report_records_its_times_and_checks_its_targets(world):
    assets, _ = world
    rep = assets.report
    times = rep["timings_s"]
    assert times["total_s"] == pytest.approx(sum(v for k, v in times.items() if k != "total_s"), abs=0.5)
    assert {"sft_s", "on_policy_pairs_s"} <= set(times) and all(v >= 0 for v in times.values())
    assert set(rep["policy"]["pass_at_8"]) == set(rep["domains"])
    for d, p in rep["policy"]["pass_at_8"].items():  # pass@8 is at least the greedy accuracy's order
        assert 0 <= p <= 1 and p >= rep["policy"]["test_accuracy"][d] - 0.15, (d, p)
    text = (assets.root / "report.md").read_text()
    assert "Targets of the recipe" in text and "pass@8" in text and "Build time:" in text


def test_the_world_meets_the_targets_its_report_claims_measured_afresh(world):
    """What the build says of its targets, measured again by other code (`conftest.assert_targets_afresh`)."""
    assets, _ = world
    assert assert_targets_afresh(assets) >= 3  # the quick world claims its band and both judge targets


def test_check_targets_names_each_missed_cell():
    recipe = AssetRecipe()
    report = {"policy": {"test_accuracy": {"arithmetic": 0.3, "reverse": 0.7},
                         "pass_at_8": {"arithmetic": 0.9, "reverse": 0.6}},
              "judges": {"math": {"domains": ["arithmetic"], "on_policy_pairwise_accuracy":
                                  {"arithmetic": 0.9, "reverse": 0.45}},
                         "mirror": {"domains": ["reverse"], "on_policy_pairwise_accuracy":
                                    {"arithmetic": 0.65, "reverse": 0.8}}}}
    band, pass_k, home, off, misleading = build_mod.check_targets(recipe, report)
    assert [t["holds"] for t in (band, pass_k, home, off, misleading)] == [False, False, False, False, True]
    assert band["detail"] == "missed by reverse 70%" and pass_k["detail"] == "missed by reverse 60%"
    assert home["detail"] == "missed by mirror on reverse 80%"
    assert off["detail"] == "missed by mirror on arithmetic 65%"
    assert misleading["detail"] == "lowest off-home cell: math on reverse 45%"


def test_reward_models_show_the_designed_specialisation(world):
    assets, _ = world
    domains = assets.report["domains"]
    for spec in assets.recipe.reward_models:
        rm = assets.report["reward_models"][spec.name]
        acc = rm["held_out_pairwise_accuracy"]
        assert set(acc) == set(domains)
        if spec.kind == "specialist":
            for d in domains:
                if d in spec.domains:
                    assert acc[d] >= 0.7, (spec.name, d, acc)          # clearly above chance on its own domains
                else:
                    assert 0.3 <= acc[d] <= 0.7, (spec.name, d, acc)   # near chance elsewhere
        else:
            assert rm["prefers_longer"] >= 0.9, rm                       # the length-hacked one
            assert all(0.25 <= a <= 0.75 for a in acc.values()), acc     # right only by accident
    # Specialists do not reward length.
    assert all(rm["prefers_longer"] < 0.75 for rm in assets.report["reward_models"].values() if rm["kind"] != "length")


def test_judges_order_the_policys_own_samples_on_their_domains_only(world):
    assets, _ = world
    rep = assets.report
    assert min(rep["on_policy_pairs_per_domain"].values()) >= 20  # enough pairs to measure
    for spec in assets.recipe.judges:
        steered = rep["judges"][spec.name]
        assert 0 < steered["kept_step"] <= spec.steps and steered["history"]  # steered by validation checks
        assert steered["kept_step"] in [h["step"] for h in steered["history"]]
        acc = steered["on_policy_pairwise_accuracy"]
        assert set(acc) == set(rep["domains"])
        for d in rep["domains"]:
            if d in spec.domains:
                assert acc[d] >= 0.75, (spec.name, d, acc)
            else:
                assert acc[d] <= 0.7, (spec.name, d, acc)
    # The default lineup routes between the judges and the length-hacked classifier, with their measured table.
    lineup, table = assets.lineup()
    assert lineup == {**{n: ("likelihood", p) for n, p in assets.judges.items()},
                      "verbose": ("hf", assets.reward_models["verbose"])}
    assert table["verbose"] == rep["reward_models"]["verbose"]["on_policy_pairwise_accuracy"]
    assert assets.lineup("classifiers")[0] == {n: ("hf", p) for n, p in assets.reward_models.items()}
    with pytest.raises(build_mod.AssetsError, match="judges or classifiers"):
        assets.lineup("both")
    assert "(judge LM)" in (assets.root / "report.md").read_text()


def test_policy_is_partly_competent_and_the_report_matches_a_fresh_measurement(world):
    assets, _ = world
    acc = assets.report["policy"]["test_accuracy"]
    assert set(acc) == set(assets.report["domains"])
    for d, a in acc.items():
        assert 0.1 <= a <= 0.8, (d, acc)
    # Re-measure from disk with plain transformers: the report is what the saved model does.
    from laser.assets.policy import greedy_accuracy

    suite = assets.suite()
    tok = AutoTokenizer.from_pretrained(assets.policy)
    model = AutoModelForCausalLM.from_pretrained(assets.policy)
    assert greedy_accuracy(model, tok, suite.test) == pytest.approx(acc)


def test_assets_are_standard_hf_directories(world):
    assets, _ = world
    for path in (assets.policy, *assets.reward_models.values(), *assets.judges.values()):
        assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
        assert (path / "tokenizer.json").is_file() and (path / "tokenizer_config.json").is_file()
    # Only the models and the report: no trainer output or intermediate left behind.
    assert sorted(p.name for p in assets.root.iterdir()) == ["judges", "manifest.json", "policy", "report.md",
                                                             "reward_models", "tokenizer"]
    assert sorted(p.name for p in (assets.root / "judges").iterdir()) == sorted(assets.judges)
    assert sorted(p.name for p in (assets.root / "reward_models").iterdir()) == sorted(assets.reward_models)
    for path in (assets.policy, *assets.judges.values()):
        assert json.loads((path / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    tok = AutoTokenizer.from_pretrained(assets.policy)
    policy = AutoModelForCausalLM.from_pretrained(assets.policy)
    n_params = sum(p.numel() for p in policy.parameters())
    assert 50_000 < n_params < 5_000_000
    enc = tok(["Q: reverse abc A:"], return_tensors="pt")
    greedy = policy.generate(**enc, max_new_tokens=6, do_sample=False)
    assert torch.equal(greedy, policy.generate(**enc, max_new_tokens=6, do_sample=False))
    torch.manual_seed(0)
    sampled = policy.generate(**enc.to(policy.device), max_new_tokens=6, do_sample=True, temperature=1.0,
                              num_return_sequences=8)
    assert sampled.shape[0] == 8 and len({tuple(s.tolist()) for s in sampled}) > 1
    for name, path in assets.reward_models.items():
        rm = AutoModelForSequenceClassification.from_pretrained(path)
        cfg = json.loads((path / "config.json").read_text())
        assert cfg["architectures"] == ["LlamaForSequenceClassification"] and rm.config.num_labels == 1, name
        assert rm.config.pad_token_id == tok.pad_token_id


def test_second_call_finds_the_cache(world, monkeypatch):
    assets, _ = world

    def no_rebuild(root, recipe, progress):
        raise AssertionError("the cached world was built again")

    monkeypatch.setattr(build_mod, "_build_into", no_rebuild)  # what it finds, not how fast: no build at all
    again = build_assets(quick_recipe(), cache_dir=assets.root.parent, progress=False)
    assert again.root == assets.root and again.report == assets.report


def _fake_build(root: Path, recipe, progress):
    (root / "policy").mkdir()
    (root / "policy" / "config.json").write_text("{}")
    return {"domains": list(recipe.suite.domains), "fake": True}


def test_a_build_that_fails_halfway_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    def crash(root, recipe, progress):
        (root / "policy").mkdir()
        (root / "policy" / "config.json").write_text("{}")
        raise KeyboardInterrupt  # as if killed while training the reward models

    monkeypatch.setattr(build_mod, "_build_into", crash)
    with pytest.raises(KeyboardInterrupt):
        build_assets(quick_recipe(), cache_dir=tmp_path, progress=False)
    digest = quick_recipe().digest()
    assert [p.name for p in tmp_path.iterdir()] == [f".{digest}.lock"]  # only the (released) build lock
    monkeypatch.setattr(build_mod, "_build_into", _fake_build)
    assets = build_assets(quick_recipe(), cache_dir=tmp_path, progress=False)
    assert assets.report["fake"] and (assets.root / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{digest}.lock", digest]


def test_builds_of_one_recipe_at_once_build_it_once(tmp_path, monkeypatch):
    import threading

    built = []

    def slow_build(root, recipe, progress):
        built.append(threading.get_ident())
        time.sleep(0.5)  # the other caller arrives while this one builds
        return _fake_build(root, recipe, progress)

    monkeypatch.setattr(build_mod, "_build_into", slow_build)
    got = []
    callers = [threading.Thread(target=lambda: got.append(build_assets(quick_recipe(), cache_dir=tmp_path,
                                                                       progress=False))) for _ in range(3)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout=60)
    assert len(built) == 1 and len(got) == 3  # one built, the others waited and loaded its build
    assert {a.root for a in got} == {tmp_path / quick_recipe().digest()} and all(a.report["fake"] for a in got)


def test_leftovers_of_a_killed_build_are_not_used_and_are_cleaned(tmp_path, monkeypatch):
    recipe = quick_recipe()
    digest = recipe.digest()
    dead = tmp_path / f".{digest}.tmp-999999999-1"        # a pid that does not exist
    (dead / "policy").mkdir(parents=True)
    incomplete = tmp_path / digest                          # a final-looking directory without its manifest
    (incomplete / "policy").mkdir(parents=True)
    monkeypatch.setattr(build_mod, "_build_into", _fake_build)
    assets = build_assets(recipe, cache_dir=tmp_path, progress=False)
    assert assets.report["fake"]
    assert not dead.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{digest}.lock", digest]


def test_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LASER_ASSETS_DIR", str(tmp_path / "env-cache"))
    monkeypatch.setattr(build_mod, "_build_into", _fake_build)
    assets = build_assets(quick_recipe(), progress=False)
    assert assets.root.parent == tmp_path / "env-cache"
    monkeypatch.delenv("LASER_ASSETS_DIR")
    assert build_mod.default_cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "laser" / "assets"


def test_recipe_digest_and_validation():
    base = AssetRecipe()
    assert base.digest() == AssetRecipe().digest()
    assert base.digest() != AssetRecipe(seed=1).digest()
    assert base.digest() != quick_recipe().digest()
    # The cache key of the default world (named by committed results) survives keys added at their default.
    # 9a9830813e6798eb: SFT up to 3000 steps (13eb98f8eee11f4b stopped at 1500, which left an Intel build
    # short of the band; the AMD EPYC build of the committed results stops in the band at step 1350 either way).
    assert base.digest() == "9a9830813e6798eb"
    mistaken = tuple(j.model_copy(update={"off_answer": "typical_mistake"}) for j in base.judges)
    assert AssetRecipe(judges=mistaken).digest() != base.digest()
    with pytest.raises(ValueError, match="off_answer"):
        JudgeSpec(name="a", domains=("strings",), off_answer="gold")
    with pytest.raises(ValueError, match="band"):
        SFTSpec(band=(0.7, 0.2))
    with pytest.raises(ValueError, match="at least one domain"):
        RewardModelSpec(name="x")
    with pytest.raises(ValueError, match="unique"):
        AssetRecipe(reward_models=(RewardModelSpec(name="a", domains=("strings",)),) * 2)
    with pytest.raises(ValueError, match="does not have"):
        quick_recipe().model_copy(update={}).model_validate(
            {**quick_recipe().model_dump(), "reward_models": [{"name": "m", "domains": ["arithmetic"]}]})
    with pytest.raises(ValueError, match="judge names must be unique"):
        AssetRecipe(judges=(JudgeSpec(name="a", domains=("strings",)),) * 2)
    with pytest.raises(ValueError, match="does not have"):
        AssetRecipe(suite=SuiteSpec(domains=("strings",)), reward_models=(),
                    judges=(JudgeSpec(name="a", domains=("yes_no",)),))
    with pytest.raises(ValueError, match="at least 1"):
        JudgeSpec(name="a", domains=())
    with pytest.raises(ValueError, match="multiple of num_heads"):
        AssetRecipe.model_validate({"model": {"hidden_size": 30, "num_heads": 4}})
    # A noisy judge: kept at or below `ceiling` at home (the gate's distance counts overshoot as well as shortfall).
    noisy = tuple(j.model_copy(update={"ceiling": 0.8, "target": 0.72}) for j in base.judges)
    assert AssetRecipe(judges=noisy).digest() != base.digest()
    with pytest.raises(ValueError, match="ceiling"):
        JudgeSpec(name="a", domains=("strings",), target=0.9, ceiling=0.8)
    from laser.assets.judges import judge_distance

    acc = {"a": 0.95, "b": 0.55}
    assert judge_distance(acc, ["a"], target=0.72, off_limit=0.6) == 0.0
    assert judge_distance(acc, ["a"], target=0.72, off_limit=0.6, ceiling=0.8) == pytest.approx(0.15)
    assert judge_distance({"a": 0.7, "b": 0.65}, ["a"], 0.72, 0.6, ceiling=0.8) == pytest.approx(0.05)


def test_recipe_yaml_round_trips_and_names_bad_keys(tmp_path):
    from laser.assets.recipe import RecipeError, dump_recipe, load_recipe

    repo = Path(__file__).parent.parent
    # configs/worlds/default.yaml is the built-in default, key for key; alt.yaml is another valid world.
    assert load_recipe(repo / "configs" / "worlds" / "default.yaml") == AssetRecipe()
    alt = load_recipe(repo / "configs" / "worlds" / "alt.yaml")
    assert set(alt.suite.domains).isdisjoint(AssetRecipe().suite.domains) and alt.digest() != AssetRecipe().digest()
    assert any(len(j.domains) > 1 for j in alt.judges)  # another specialisation pattern
    # The worlds that do not favour routing: a judge good on every domain; judges only a little better at home.
    generalist = load_recipe(repo / "configs" / "worlds" / "generalist.yaml")
    assert any(set(j.domains) == set(generalist.suite.domains) for j in generalist.judges)
    noisy = load_recipe(repo / "configs" / "worlds" / "noisy-judges.yaml")
    assert all(j.ceiling < 1 and j.off_home == 0 for j in noisy.judges) and not noisy.targets.misleading
    path = tmp_path / "w.yaml"
    for recipe in (AssetRecipe(), alt, quick_recipe(3)):
        path.write_text(dump_recipe(recipe))
        assert load_recipe(path) == recipe and load_recipe(path).digest() == recipe.digest()
    # --seed changes the suite too (unless the recipe pins the suite's own seed).
    seeded = load_recipe(repo / "configs" / "worlds" / "default.yaml", seed=4)
    assert seeded.seed == 4 and seeded.suite_seed == 4 and AssetRecipe().suite_seed == 0
    assert quick_recipe(2).suite_seed == 2
    cases = {"judges:\n- {name: math, domains: [arithmetic], stepz: 3}\n": "judges.0.stepz: unknown key",
             "sft: {learning_rate: -1}\n": "sft.learning_rate: Input should be greater than 0",
             "suite: {domains: [arithmetic, telepathy]}\n": "unknown suite domain(s) ['telepathy']",
             "- a list\n": "must hold a mapping", "seed: [\n": "not valid YAML"}
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(RecipeError, match=re.escape(message)):
            load_recipe(path)
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_a_world_without_specialist_classifiers_refuses_that_lineup(tmp_path):
    report = {"reward_models": {"verbose": {"kind": "length", "on_policy_pairwise_accuracy": {"a": 0.5}}},
              "judges": {}}
    assets = build_mod.Assets(root=tmp_path, recipe=AssetRecipe(), report=report)
    with pytest.raises(build_mod.AssetsError, match="no specialist classifiers"):
        assets.lineup("classifiers")


def test_wrong_answers_are_wrong_and_pairs_are_labelled_as_designed():
    import random

    from laser.tasks import DOMAINS

    suite = make_suite(seed=1, train=100, validation=10, test=10, domains=DOMAINS)
    rng = random.Random(0)
    odd = [Example(id=f"i{g}", prompt="Q: ? A:", answer=g, answer_format="integer") for g in ("-7", "0", "5", "-12")]
    odd.append(Example(id="s", prompt="Q: reverse aa A:", answer="aa", answer_format="exact"))
    for ex in [*suite.train, *odd]:
        for _ in range(5):
            assert not check(ex, " " + wrong_answer(ex, rng)), ex
    rows = correctness_pairs(suite.train, random.Random(0), truthful=["strings"])
    by_domain = {}
    for r, ex in zip(rows, suite.train, strict=True):
        by_domain.setdefault(ex.domain, []).append(check(ex, r["chosen"]))
    assert all(by_domain["strings"])
    for d in set(DOMAINS) - {"strings"}:
        assert 0.25 < sum(by_domain[d]) / len(by_domain[d]) < 0.75, d   # coin-flip labels off the own domains
    for r in length_pairs(suite.train, random.Random(0)):
        assert len(r["chosen"]) > len(r["rejected"])


def test_cli_build_assets_reports_the_cached_world(world, capsys):
    from laser.cli import main

    assets, _ = world
    assert main(["build-assets", "--quick", "--quiet", "--cache-dir", str(assets.root.parent)]) == 0
    out = capsys.readouterr().out
    assert "held-out pairwise accuracy" in out and str(assets.policy) in out
    for name in assets.reward_models:
        assert f"| {name} (" in out


def test_vllm_generates_from_the_policy_like_hf(world, monkeypatch):
    """Greedy vLLM completions equal HF's; sampling gives several distinct completions."""
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams

    assets, _ = world
    suite = assets.suite()
    prompts = [ex.prompt for ex in suite.test[::10]]
    hf_texts = hf_greedy_texts(AutoModelForCausalLM.from_pretrained(assets.policy),
                               AutoTokenizer.from_pretrained(assets.policy), prompts, 8)

    llm = LLM(model=str(assets.policy), dtype="float32", max_model_len=128, kv_cache_memory_bytes=64 << 20,
              seed=0, enforce_eager=True)
    greedy = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=8), use_tqdm=False)
    assert [o.outputs[0].text for o in greedy] == hf_texts
    open_ended = [ex.prompt for ex in suite.test if ex.domain == "strings"][:4]
    sampled = llm.generate(open_ended, SamplingParams(temperature=1.0, n=8, max_tokens=8, seed=0), use_tqdm=False)
    assert all(len(o.outputs) == 8 for o in sampled)
    assert len({c.text for o in sampled for c in o.outputs}) > 4
