"""Field types for the commands' path (and data source) options, so that `--help` reads as the user
types them.

A command with presets cannot leave a required option without a default (the preset supplies every
other field), so its required paths default to None or an empty list and its `main` names the
missing ones. Left plain, `--help` would show those as `{None}|PATH ... (default: None)`; these
types show `PATH ... (required)` instead. The check itself stays in each command's `main`, which
the pipeline calls too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import tyro

RequiredPath = Annotated[Path | None, tyro.conf.arg(metavar="PATH", help_behavior_hint="(required)")]
RequiredPaths = Annotated[list[Path], tyro.conf.arg(metavar="PATH [PATH ...]", help_behavior_hint="(required)")]
OptionalPath = Annotated[Path | None, tyro.conf.arg(metavar="PATH", help_behavior_hint="(optional)")]
OptionalPaths = Annotated[list[Path], tyro.conf.arg(metavar="PATH [PATH ...]", help_behavior_hint="(optional)")]
OptionalSources = Annotated[list[str], tyro.conf.arg(metavar="SOURCE [SOURCE ...]", help_behavior_hint="(optional)")]
