"""The ablation variants and the config of one grid point (variant, seed) on top of a base config.

Variants 1-5 are the paper's ablation (issue 7); 6 and 7 are Shap-CA with the token coverage game (issue 12), whose
Shapley values are not a rescaled cosine. Every Shapley variant names its game, so a base config's game never leaks in.
8 and 9 (issue 24) test the first hypothesis for why no context variant beats text only, that the fusion's context
gate closes (to about 0 in every run): variant 4 with a gate that cannot close below 0.25, and variant 4 with the gate
opened at the start (sigmoid(2) = 0.88) and the fusion trained at a fifth of lr_head, so that it opens slowly if at
all. Both values are a first guess, not tuned. They run only when named (`--variants gatefloor,gateopen`).

Settings beyond the variant (without the default case features: `-o model.word_features=none`) are overrides of the
base, not variants: the report shows them as settings of the same variant, each row labelled with what it changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.config import SEED_KEY, ExperimentConfig, apply_overrides
from components.datasets import get_spec


@dataclass(frozen=True)
class Variant:
    number: int
    key: str
    label: str
    overrides: tuple[str, ...]

    @property
    def needs_contexts(self) -> bool:
        return self.key != "text"


VARIANTS: dict[str, Variant] = {
    v.key: v
    for v in (
        Variant(1, "text", "text only", ("model.context_mode=none", "model.alignment=none")),
        Variant(
            2, "concat", "context-concat (text [SEP] context)", ("model.context_mode=concat", "model.alignment=none")
        ),
        Variant(3, "fusion", "fusion, no alignment", ("model.context_mode=fusion", "model.alignment=none")),
        Variant(4, "infonce", "fusion + InfoNCE on cosine", ("model.context_mode=fusion", "model.alignment=infonce")),
        Variant(
            5,
            "shapca",
            "full Shap-CA (fusion + Shapley InfoNCE), cosine-of-sum game",
            ("model.context_mode=fusion", "model.alignment=shapley", "model.shapley_game=cosine_of_sum"),
        ),
        Variant(
            6,
            "coverage",
            "Shap-CA, token coverage game, pooled covers",
            (
                "model.context_mode=fusion",
                "model.alignment=shapley",
                "model.shapley_game=token_coverage",
                "model.coverage_scores=pooled",
            ),
        ),
        Variant(
            7,
            "maxsim",
            "Shap-CA, token coverage game, MaxSim covers",
            (
                "model.context_mode=fusion",
                "model.alignment=shapley",
                "model.shapley_game=token_coverage",
                "model.coverage_scores=maxsim",
            ),
        ),
        Variant(
            8,
            "gatefloor",
            "fusion + InfoNCE, context gate floored at 0.25",
            ("model.context_mode=fusion", "model.alignment=infonce", "model.context_gate_floor=0.25"),
        ),
        Variant(
            9,
            "gateopen",
            "fusion + InfoNCE, context gate opened at the start, fusion at lr 1e-3",
            (
                "model.context_mode=fusion",
                "model.alignment=infonce",
                "model.context_gate_bias=2.0",
                "train.lr_fusion=1e-3",
            ),
        ),
    )
}
_BY_NUMBER = {v.number: v for v in VARIANTS.values()}
_VARIANT_KEYS = {o.partition("=")[0] for v in VARIANTS.values() for o in v.overrides}


def parse_variants(text: str) -> list[Variant]:
    """`"1,2,5"` or `"text,shapca"` (mixed is fine) -> variants in the order given."""
    chosen: list[Variant] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        variant = _BY_NUMBER.get(int(part)) if part.isdigit() else VARIANTS.get(part)
        if variant is None:
            known = ", ".join(f"{v.number}={v.key}" for v in VARIANTS.values())
            raise ValueError(f"unknown ablation variant {part!r}: expected one of {known}")
        if variant not in chosen:
            chosen.append(variant)
    if not chosen:
        raise ValueError(f"no ablation variants in {text!r}")
    return chosen


# The paper's ablation and the coverage games: the default grid where every variant runs (variants 1-7).
_SEVEN = tuple(v.key for v in VARIANTS.values() if v.number <= 7)
# The issue-12 comparison: text only, plain InfoNCE and the three Shapley games (variants 1, 4, 5, 6, 7).
_GAME_COMPARISON = ("text", "infonce", "shapca", "coverage", "maxsim")
# Datasets whose grid is fixed whatever the generator (variant keys); the others follow the generator.
_DATASET_GRIDS: dict[str, tuple[str, ...]] = {"twitter2015": _GAME_COMPARISON}


def default_variants(dataset: str, generator: str) -> list[Variant]:
    """All seven variants on Twitter-2017 with BLIP-2, concat vs full with mPLUG-Owl, the game comparison (1, 4, 5, 6,
    7) on Twitter-2015, text only where no published contexts describe the images (MNRE and mnre-joint)."""
    if not get_spec(dataset).publishes_contexts():
        return [VARIANTS["text"]]
    if dataset in _DATASET_GRIDS:
        return [VARIANTS[key] for key in _DATASET_GRIDS[dataset]]
    if generator == "mplug-owl":
        return [VARIANTS["concat"], VARIANTS["shapca"]]
    return [VARIANTS[key] for key in _SEVEN]


def context_source(cfg: ExperimentConfig) -> str:
    """Where a run's contexts come from: a context file's stem, the generator, or "none"."""
    if cfg.data.context_file is not None:
        return Path(cfg.data.context_file).stem
    if not get_spec(cfg.data.dataset).publishes_contexts(cfg.data.context_generator):
        return "none"
    return cfg.data.context_generator


def group_name(cfg: ExperimentConfig) -> str:
    return f"{cfg.data.dataset}/{context_source(cfg)}"


def point_config(
    base: ExperimentConfig,
    variant: Variant,
    seed: int,
    *,
    dataset: str | None = None,
    generator: str | None = None,
    epochs: int | None = None,
    overrides: Sequence[str] = (),
    output_root: Path | None = None,
) -> ExperimentConfig:
    """The config of one grid point: base, then dataset/generator/epochs, then extra overrides, then the variant."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in _VARIANT_KEYS:
            raise ValueError(f"override {item!r}: {key} is what the ablation variants set; choose variants instead")
        if key == SEED_KEY:
            raise ValueError(f"override {item!r}: seeds are set by the grid (base train.seed + i); use --seeds")
    raw: dict[str, Any] = base.model_dump(mode="json")
    head = [f"data.dataset={dataset}"] if dataset else []
    head += [f"data.context_generator={generator}"] if generator else []
    head += [f"train.epochs={epochs}"] if epochs is not None else []
    raw = apply_overrides(
        raw, [*head, *overrides, *variant.overrides, "tracking.register_model=false", "tracking.log_model=false"]
    )
    raw["train"]["seed"] = seed
    cfg = ExperimentConfig.model_validate(raw)
    if variant.needs_contexts and context_source(cfg) == "none":
        raise ValueError(
            f"variant {variant.number} ({variant.key}) reads image contexts, but {cfg.data.dataset} with "
            f"data.context_generator={cfg.data.context_generator} has none: pass data.context_file=<a context set "
            "written by `shapca contexts`> as an override, or choose variant 1 (text)"
        )
    root = Path(output_root) if output_root is not None else Path(cfg.train.output_dir) / "ablation"
    out = root / group_name(cfg).replace("/", "-") / variant.key / f"seed{seed}"
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"output_dir": out})})
