"""The built-in synthetic world: corpus, prompt sets, demonstrations, gold judges and simulated
annotators, so the whole recipe runs (and is measured) on a laptop. See docs/world.md.

Only the pipeline and the tests import this package; every stage reads the documented file
formats, so real data replaces the world file for file.
"""

from llamaforge.world.gatt import GattInstruction, constraint_followed, parse_instruction
from llamaforge.world.judges import is_refusal
from llamaforge.world.world import World

__all__ = ["World", "GattInstruction", "constraint_followed", "is_refusal", "parse_instruction"]
