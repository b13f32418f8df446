"""The closed sets the commands accept, as ``Literal`` types: typer shows them in ``--help`` (``<a|b|c>``) and rejects
anything else with a message that lists them (exit code 2). Underscored: the command loader skips it."""

from __future__ import annotations

from typing import Literal

Dataset = Literal["twitter2015", "twitter2017", "mnre", "mnre-joint"]
Split = Literal["train", "dev", "test"]
Generator = Literal["blip2", "mplug-owl"]  # the published context sets
ContextGenerator = Literal["blip2", "mplug-owl", "none"]  # "none": no contexts
Backend = Literal["precomputed", "hf", "openai"]
Device = Literal["auto", "cpu", "cuda"]
Dtype = Literal["auto", "fp32", "bf16", "fp16"]
