"""Split hygiene: no test prompt, and no test fact or skill instance, reaches any training data."""

from collections import Counter

from llamaforge.world.gatt import KINDS
from llamaforge.world.prompts import CATEGORIES, prompt_key


def _groups(world, records):
    return {world.task(r["messages"]).group for r in records}


def _user_texts(messages):
    return [m["content"] for m in messages if m["role"] == "user"]


def test_every_set_is_nonempty_and_groups_are_disjoint(world):
    for category in CATEGORIES:
        train, test = world.prompts(category, "train"), world.prompts(category, "test")
        assert len(test) >= 40 and len(train) > 3 * len(test), category
        assert not _groups(world, train) & _groups(world, test), category


def test_multi_turn_prompts_only_use_their_own_split(world):
    test_groups = set().union(*(_groups(world, world.prompts(c, "test")) for c in CATEGORIES))
    train_texts = {t for c in CATEGORIES for r in world.prompts(c, "train")
                   for t in _user_texts(r["messages"])}
    test_texts = {t for c in CATEGORIES for r in world.prompts(c, "test")
                  for t in _user_texts(r["messages"])}
    # an earlier turn of a training prompt is never a test question, and vice versa
    shared = {t for t in train_texts & test_texts if not t.startswith(("I'm writing", "Can I ask"))}
    assert not shared
    for r in world.prompts("helpful", "train"):
        for text in _user_texts(r["messages"]):
            task = world.pool.index.get(text)
            assert task is None or task.group not in test_groups


def test_sft_and_batches_never_contain_test_prompts(world):
    test_keys = {prompt_key(r["messages"]) for c in CATEGORIES for r in world.prompts(c, "test")}
    test_groups = set().union(*(_groups(world, world.prompts(c, "test")) for c in CATEGORIES))
    for dialog in world.sft_dialogs("train"):
        prompt = dialog["messages"][:-1]
        assert prompt_key(prompt) not in test_keys
        assert world.task(prompt).group not in test_groups
    for k in range(4):
        for r in world.batch(k):
            assert prompt_key(r["messages"]) not in test_keys
            assert world.task(r["messages"]).group not in test_groups


def test_no_test_prompt_occurs_in_the_corpus(world):
    corpus = "\n".join(world.corpus_documents(1_000_000))
    for c in CATEGORIES:
        for r in world.prompts(c, "test"):
            for text in _user_texts(r["messages"]):
                if not text.startswith(("I'm writing", "Can I ask")):  # generic openers
                    assert text not in corpus, text


def test_batches_are_fresh_mixed_and_deterministic(world):
    b0, b1 = world.batch(0), world.batch(1)
    assert len(b0) == len(b1) == 200
    keys0, keys1 = {prompt_key(r["messages"]) for r in b0}, {prompt_key(r["messages"]) for r in b1}
    assert len(keys0) == 200 and not keys0 & keys1  # fresh while categories last
    counts = {c: sum(r["category"] == c for r in b0) for c in CATEGORIES}
    assert counts == {"helpful": 140, "adversarial": 40, "borderline": 20}
    assert world.batch(3) == world.batch(3)
    assert {r["batch"] for r in world.batch(3)} == {3}


def test_gatt_instructions_are_new_in_test(world):
    train, test = world.gatt_instructions("train"), world.gatt_instructions("test")
    assert len(train) == 200 and len(test) == 50
    train_values = {c.value for i in train for c in i.constraints if c.value}
    for inst in test:
        assert inst.text not in {i.text for i in train}
        assert any(c.value and c.value not in train_values for c in inst.constraints), inst.text
    assert sum(len(i.constraints) == 2 for i in train) > 50  # combinations are common


def test_gatt_instructions_draw_every_kind_and_name_words_bare(world):
    """Kinds are drawn evenly (not one name per character), and a named word is never quoted, so
    it is the same SentencePiece piece in the instruction as in the answer that copies it."""
    train = world.gatt_instructions("train")
    kinds = Counter(c.kind for i in train for c in i.constraints)
    assert set(kinds) == set(KINDS)
    assert max(kinds.values()) < 3 * min(kinds.values()), kinds
    for inst in train:
        assert '"' not in inst.text and '"' not in inst.short


def test_no_test_word_skill_instance_is_worked_in_the_corpus(world):
    """The corpus works fresh instances of the word skills; none may be a test instance."""
    corpus = "\n".join(world.corpus_documents())
    checked = 0
    for r in world.prompts("helpful", "test"):
        task = world.task(r["messages"])
        if task.kind == "compare":
            a, b = task.group.split(":")[1:]
            worked = (f"Of {a} and {b},", f"Of {b} and {a},")
        elif task.kind in ("count_words", "reverse", "sort"):
            words = task.group.split(":", 1)[1].split("-")
            worked = ({"count_words": f"The list {', '.join(words)} has",
                       "reverse": f"The words {' '.join(words)} reversed",
                       "sort": f"The words {', '.join(words)} in alphabetical"}[task.kind],)
        else:
            continue
        checked += 1
        for text in worked:
            assert text not in corpus, text
    assert checked > 100
    assert corpus.count("Of ") > 1000 and corpus.count(" reversed are: ") > 500  # the worked examples are there
