"""Risk categories of adversarial prompts (paper §4.2.4): each hazard kind is one category with an
answer template, every adversarial record names its category, and no other record does."""

from llamaforge.world.prompts import CATEGORIES, SPLITS


def test_every_adversarial_prompt_names_its_risk_category_and_nothing_else_does(world):
    templates = world.answer_templates()
    assert sorted(templates) == sorted(h.risk for h in world.hazards)  # one category per hazard kind
    assert all(text.startswith("Refuse") for text in templates.values())
    for category in CATEGORIES:
        for split in SPLITS:
            for record in world.prompts(category, split):
                risk = world.risk_category(record["messages"])
                assert record.get("risk_category") == risk
                assert (risk is not None) == (category == "adversarial")
    hazard = world.hazards[world.task(world.prompts("adversarial", "test")[0]["messages"]).hazard]
    assert world.risk_category(world.prompts("adversarial", "test")[0]["messages"]) == hazard.risk
    batch = world.batch(0, 50)
    assert all(("risk_category" in r) == (r["category"] == "adversarial") for r in batch)
