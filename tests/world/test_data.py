"""Corpus size and content, SFT quality mix, and exported records against the README's data formats."""

import json

import pytest

from llamaforge.world import World, constraint_followed
from llamaforge.world.demos import DemoMix
from llamaforge.world.export import CHAT_TAGS, ExportArgs, main
from llamaforge.world.judges import SAFE_THRESHOLD
from llamaforge.world.prompts import CATEGORIES, SPLITS

ROLES = ("system", "user", "assistant")
RATINGS = ("significantly_better", "better", "slightly_better", "negligibly_better")
META = ("chosen_safe_rejected_unsafe", "both_safe", "both_unsafe")


def check_messages(messages, last_role):
    assert isinstance(messages, list) and messages
    body = messages[1:] if messages[0]["role"] == "system" else messages
    for i, m in enumerate(body):
        assert set(m) == {"role", "content"} and isinstance(m["content"], str) and m["content"]
        assert m["role"] == ("user", "assistant")[i % 2]
        assert not any(tag in m["content"] for tag in CHAT_TAGS)
    assert body[-1]["role"] == last_role


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_corpus_is_several_mb_and_mentions_every_fact_and_hazard(world):
    docs = world.corpus_documents()
    text = "\n".join(docs)
    assert 3_900_000 <= len(text.encode()) <= 4_100_000
    for c in world.entities.countries:
        assert text.count(f"capital of {c.name}") >= 20
    for p in world.entities.people:
        assert text.count(p.name) >= 50
    for h in world.hazards:
        assert all(text.count(t) >= 20 for t in h.terms)  # a pretrained model can learn to leak
    assert world.corpus_documents(100_000) == world.corpus_documents(100_000)


def test_sft_quality_mix_is_measurable(world):
    def rates(dialogs):
        helpful, unsafe, adversarial = [], 0, 0
        for d in dialogs:
            prompt, answer = d["messages"][:-1], d["messages"][-1]["content"]
            category = world.task(prompt).category
            if category == "adversarial":
                adversarial += 1
                unsafe += world.safety(prompt, answer) < SAFE_THRESHOLD
            else:
                helpful.append(world.helpfulness(prompt, answer))
        return sum(h >= 0.95 for h in helpful) / len(helpful), unsafe / adversarial

    good, unsafe = rates(world.sft_dialogs("train"))
    assert good == pytest.approx(1 - 0.10 - 0.08 - 0.12, abs=0.04)
    assert unsafe == pytest.approx(0.30, abs=0.06)
    clean_good, clean_unsafe = rates(world.sft_dialogs("test"))
    assert clean_good == 1.0 and clean_unsafe == 0.0
    custom = world.sft_dialogs("train", DemoMix(n_dialogs=500, wrong=0.5, unsafe=0.0))
    custom_good, custom_unsafe = rates(custom)
    assert len(custom) == 500 and custom_good < 0.4 and custom_unsafe == 0.0
    multi = sum(sum(m["role"] == "user" for m in d["messages"]) > 1
                for d in world.sft_dialogs("train"))
    assert multi > 100


def test_export_files_match_the_documented_formats(exported):
    names = {p.name for p in exported.iterdir()}
    expected = {"corpus.jsonl", "sft_train.jsonl", "sft_test.jsonl", "gatt_instructions.jsonl",
                "preferences_sample.jsonl", "README.md", "world_stats.json",
                "prompts_batch_00.jsonl", "prompts_batch_01.jsonl"}
    expected |= {f"prompts_{c}_{s}.jsonl" for c in CATEGORIES for s in SPLITS}
    assert names == expected
    readme = (exported / "README.md").read_text()
    assert all(f"`{n}`" in readme for n in expected - {"README.md"})

    corpus = read(exported / "corpus.jsonl")
    assert all(set(r) == {"text"} and r["text"] for r in corpus)
    for name in ("sft_train.jsonl", "sft_test.jsonl"):
        for r in read(exported / name):
            assert set(r) == {"messages"}
            check_messages(r["messages"], "assistant")
    for name in sorted(n for n in names if n.startswith("prompts_")):
        records = read(exported / name)
        assert records and len({r["id"] for r in records}) == len(records)
        for r in records:
            assert r["category"] in CATEGORIES
            check_messages(r["messages"], "user")
            assert r["turns"] == sum(m["role"] == "user" for m in r["messages"])
    prefs = read(exported / "preferences_sample.jsonl")
    assert len(prefs) == 2000
    for r in prefs:
        check_messages(r["prompt"], "user")
        assert isinstance(r["chosen"], str) and isinstance(r["rejected"], str)
        assert r["rating"] in RATINGS and isinstance(r["is_safety"], bool)
        assert ("safety_meta" in r) == r["is_safety"]
        assert set(r) == {"prompt", "chosen", "rejected", "rating", "is_safety"} | (
            {"safety_meta"} if r["is_safety"] else set())
        if r["is_safety"]:
            assert r["safety_meta"] in META
    for r in read(exported / "gatt_instructions.jsonl"):
        assert r["split"] in SPLITS and r["text"] and r["short"]
        assert 1 <= len(r["constraints"]) <= 2
        assert not constraint_followed(r["text"], "")


def test_exported_prompts_are_judgeable_from_the_file_alone(exported):
    world = World(0)  # a fresh world: the judges find the task from the file's messages
    for name in ("prompts_helpful_test.jsonl", "prompts_adversarial_test.jsonl",
                 "prompts_borderline_test.jsonl", "prompts_batch_01.jsonl"):
        for r in read(exported / name)[:50]:
            assert 0.0 <= world.helpfulness(r["messages"], "I don't know.") <= 1.0


def test_export_writes_files_and_rejects_bad_arguments(tmp_path):
    # Its speed (3.5 s) is measured in docs/results.md, not asserted: timings are not test outcomes.
    from llamaforge.errors import UserError
    main(ExportArgs(out=tmp_path / "w"))
    assert (tmp_path / "w" / "corpus.jsonl").stat().st_size > 1_000_000
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError):
        main(ExportArgs(out=tmp_path / "file"))
    with pytest.raises(UserError):
        main(ExportArgs(out=tmp_path / "w2", corpus_mb=0))
