"""Preference data (llamaforge/data/preferences.py, paper §3.2.1-§3.2.2): our format,
TRL's and Anthropic HH-RLHF's transcripts read into the same pairs; file:line errors or counted
drops for bad records; margins per rating (Table 27); our records round-trip."""

from __future__ import annotations

import json

import pytest

from llamaforge.data.preferences import Preference, effective_margin, read_all, read_preferences, to_record
from llamaforge.errors import UserError
from llamaforge.losses import MARGINS

HISTORY = [
    {"role": "user", "content": "How do I keep basil alive indoors?"},
    {"role": "assistant", "content": "Give it a sunny window and water when the soil is dry."},
    {"role": "user", "content": "And how often should I trim it?"},
]
CHOSEN = "Pinch off the top leaves every week or two, just above a pair of leaves."
REJECTED = "Never trim it."

OURS = {"id": "p-7", "prompt": HISTORY, "chosen": CHOSEN, "rejected": REJECTED, "rating": "better", "is_safety": False}
TRL_EXPLICIT = {"prompt": HISTORY, "chosen": CHOSEN, "rejected": REJECTED, "margin": 1.5}
TRL_IMPLICIT = {
    "chosen": HISTORY + [{"role": "assistant", "content": CHOSEN}],
    "rejected": HISTORY + [{"role": "assistant", "content": REJECTED}],
}
HH_HISTORY = (
    "\n\nHuman: How do I keep basil alive indoors?"
    "\n\nAssistant: Give it a sunny window and water when the soil is dry."
    "\n\nHuman: And how often should I trim it?"
)
HH = {"chosen": f"{HH_HISTORY}\n\nAssistant: {CHOSEN}", "rejected": f"{HH_HISTORY}\n\nAssistant: {REJECTED}"}


def write(tmp_path, records, name="prefs.jsonl"):
    """Records as JSONL; a str record is written verbatim (for broken lines)."""
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def test_the_same_pair_in_every_format(tmp_path):
    prefs, dropped = read_preferences(write(tmp_path, [OURS, TRL_EXPLICIT, TRL_IMPLICIT, HH]))
    assert dropped == 0 and len(prefs) == 4
    for pref in prefs:
        assert pref.prompt == tuple(HISTORY)
        assert (pref.chosen, pref.rejected) == (CHOSEN, REJECTED)
    assert [(p.rating, p.margin, p.is_safety) for p in prefs] == [
        ("better", None, False), (None, 1.5, False), (None, None, False), (None, None, False)]


def test_string_prompt_is_one_user_message_and_default_is_safety(tmp_path):
    record = {"prompt": "Name a river.", "chosen": "The Nile.", "rejected": "A mountain.", "is_safety": False}
    path = write(tmp_path, [dict(TRL_EXPLICIT, prompt="Name a river."), HH, record])
    prefs, _ = read_preferences(path, default_is_safety=True)
    assert prefs[0].prompt == ({"role": "user", "content": "Name a river."},)
    assert [p.is_safety for p in prefs] == [True, True, False]  # a record's own label wins


def test_multi_turn_hh_record(tmp_path):
    # Quirks of the real set: a leading "\n\n", a multi-paragraph answer, and "Human:" inside text.
    shared = ("\n\nHuman: What are some polite ways to decline an invitation?"
              "\n\nAssistant: Here are a few.\n\nThank them first, then say you can't make it."
              "\n\nHuman: Which one do you like best?")
    record = {"chosen": shared + "\n\nAssistant: Thanking them first. Human: warmth goes a long way.",
              "rejected": shared + "\n\nAssistant: I have not thought about it."}
    [pref], _ = read_preferences(write(tmp_path, [record]))
    assert [m["role"] for m in pref.prompt] == ["user", "assistant", "user"]
    assert pref.prompt[1]["content"] == "Here are a few.\n\nThank them first, then say you can't make it."
    assert pref.prompt[2]["content"] == "Which one do you like best?"
    assert pref.chosen == "Thanking them first. Human: warmth goes a long way."
    assert pref.rejected == "I have not thought about it."
    assert (pref.rating, pref.margin, pref.is_safety) == (None, None, False)


BAD = [  # (record or raw line, field named in the error, words of the message)
    ("{not json", None, "not valid JSON"),
    ([1, 2], None, "expected a JSON object"),
    ({k: v for k, v in OURS.items() if k != "rejected"}, "rejected", "missing"),
    ({k: v for k, v in OURS.items() if k != "is_safety"}, "is_safety", "missing"),
    ({k: v for k, v in OURS.items() if k != "prompt"}, "prompt", "missing"),
    (dict(OURS, chosen=3), "chosen", "expected a string"),
    (dict(OURS, is_safety="yes"), "is_safety", "true or false"),
    (dict(OURS, rating="much_better"), "rating", "'much_better' is not one of"),
    (dict(OURS, safety_meta="chosen_unsafe"), "safety_meta", "is not one of"),
    (dict(OURS, rejected=CHOSEN), "rejected", "identical"),
    (dict(OURS, chosen="  "), "chosen", "empty"),
    (dict(OURS, chosen="[INST] hi"), "chosen", "special tag"),
    (dict(OURS, prompt=HISTORY[:2]), "prompt", "expected 'user'"),
    (dict(OURS, prompt=[{"role": "user", "content": "hi [/INST]"}]), "prompt", "special tag"),
    (dict(OURS, prompt=[{"role": "user", "content": " "}]), "prompt", "empty"),
    (dict(OURS, prompt=["hi"]), "prompt", "message 0"),
    (dict(TRL_EXPLICIT, margin="big"), "margin", "finite number"),
    (dict(TRL_IMPLICIT, rejected=[{"role": "user", "content": "x"}, {"role": "assistant", "content": REJECTED}]),
     "rejected", "differs"),
    (dict(TRL_IMPLICIT, chosen=HISTORY), "chosen", "end with an assistant"),
    ({"chosen": "Human: hi\n\nAssistant: hello", "rejected": "hello"}, "rejected", "Human:"),
    ({"chosen": "\n\nAssistant: hello", "rejected": "\n\nAssistant: bye"}, "chosen", "no 'Human:' turn"),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: yo", "rejected": "\n\nHuman: hi"}, "rejected", "no final 'Assistant:'"),
    ({"chosen": "\n\nHuman: hi\n\nAssistant:", "rejected": "\n\nHuman: hi\n\nAssistant: yo"}, "chosen", "empty"),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: yo", "rejected": "\n\nHuman: hey\n\nAssistant: no"}, "rejected", "differ"),
]


@pytest.mark.parametrize("bad, field, words", BAD, ids=[f"{f}:{w}" for _, f, w in BAD])
def test_bad_record_is_named_or_dropped(tmp_path, bad, field, words):
    path = write(tmp_path, [OURS, "", bad, HH])  # line 2 is blank: the bad record is on line 3
    with pytest.raises(UserError) as err:
        read_preferences(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:3: " + (f"field '{field}': " if field else ""))
    assert words in message
    prefs, dropped = read_preferences(path, on_invalid="drop")
    assert dropped == 1 and [p.rating for p in prefs] == ["better", None]


def test_missing_file_and_read_all(tmp_path):
    with pytest.raises(UserError, match="nowhere.jsonl: file not found"):
        read_preferences(tmp_path / "nowhere.jsonl")
    first = write(tmp_path, [OURS, "{"], "a.jsonl")
    second = write(tmp_path, [HH], "b.jsonl")
    prefs, dropped = read_all([first, second], on_invalid="drop")
    assert dropped == 1 and [p.rating for p in prefs] == ["better", None]


HAND_MARGINS = [("none", [0, 0, 0, 0]), ("small", [1, 2 / 3, 1 / 3, 0]), ("large", [3, 2, 1, 0])]  # Table 27


@pytest.mark.parametrize("preset, expected", HAND_MARGINS)
def test_effective_margin_per_rating(preset, expected):
    ratings = ["significantly_better", "better", "slightly_better", "negligibly_better"]
    prefs = [Preference((), "a", "b", rating, None, False) for rating in ratings]
    assert [effective_margin(p, MARGINS[preset]) for p in prefs] == pytest.approx(expected)


def test_explicit_margin_wins_and_no_rating_means_zero():
    assert effective_margin(Preference((), "a", "b", None, 0.25, False), MARGINS["large"]) == 0.25
    assert effective_margin(Preference((), "a", "b", "better", 0.25, False), MARGINS["large"]) == 0.25
    assert effective_margin(Preference((), "a", "b", None, None, False), MARGINS["large"]) == 0.0


def test_to_record_round_trips(tmp_path):
    safety = dict(OURS, is_safety=True, safety_meta="both_unsafe")
    prefs, _ = read_preferences(write(tmp_path, [OURS, safety, TRL_EXPLICIT, TRL_IMPLICIT, HH], "in.jsonl"),
                                default_is_safety=True)
    again, dropped = read_preferences(write(tmp_path, [to_record(p) for p in prefs], "out.jsonl"))
    assert dropped == 0 and again == prefs
    assert to_record(prefs[1]) == {k: v for k, v in safety.items() if k != "id"}
