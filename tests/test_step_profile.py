"""The per-phase step profile on a tiny random BERT over a real Twitter-2017 batch with BLIP-2 contexts, the
`shapca bench step` command, and docs/PERFORMANCE.md rendered from real benchmark and timing JSON."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from components.benchmarks.step_profile import FORWARD_PHASES, PHASES, profile_step
from components.config import load_config
from components.datasets import labels, load_contexts, load_split
from components.model.shapca import ShapCA
from components.model.shapca_config import ShapCAConfig


@pytest.fixture(scope="module")
def batch(data_dir):
    examples = load_split("twitter2017", "train", data_dir, limit=8)
    return examples, load_contexts("blip2", "twitter2017", data_dir).contexts


def _model(tiny_bert_dir, **overrides) -> ShapCA:
    """A tiny NER model of the paper's Shap-CA (the Shapley game; contexts through the shared text encoder, trained
    whole, so the encoder's two calls are told apart per step)."""
    torch.manual_seed(0)
    base = dict(text_encoder=str(tiny_bert_dir), alignment="shapley", context_trainable_layers=None)
    config = ShapCAConfig(**(base | dict(align_dim=16, permutations=8) | overrides))
    return ShapCA.from_config(config, "ner", labels("twitter2017"))


def _hooks(module) -> int:
    return len(module._forward_hooks) + len(module._forward_pre_hooks)


@pytest.mark.parametrize("separate_context_encoder", [False, True])
def test_full_model_reports_every_phase_once_per_step(tiny_bert_dir, batch, separate_context_encoder):
    examples, contexts = batch
    model = _model(tiny_bert_dir, context_encoder=str(tiny_bert_dir) if separate_context_encoder else None)
    before = model.head.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    profile = profile_step(model, examples, contexts, repeats=3, warmup=1)

    assert list(profile.phases) == list(PHASES)
    for phase in FORWARD_PHASES:
        # The shared encoder's two calls are told apart: one text call and one context call per step.
        assert profile.phases[phase].calls_per_step == 1.0, phase
    for name, stats in [*profile.phases.items(), ("step", profile.step), ("collate", profile.collate)]:
        assert 0 <= stats.min_ms <= stats.median_ms <= stats.max_ms, name
    assert profile.phases["text_encoder"].median_ms > 0 and profile.phases["backward"].median_ms > 0
    assert profile.step.median_ms >= max(s.median_ms for s in profile.phases.values())
    assert profile.batch_size == 8 and profile.context_tokens is not None
    # Real steps were taken (the optimizer moved the head), and the hooks are gone afterwards.
    assert any(not torch.equal(before[k], v) for k, v in model.head.state_dict().items())
    for module in (model.text_encoder, model.context_encoder, model.fusion, model.alignment, model.head):
        if module is not None:
            assert _hooks(module) == 0


def test_concat_without_alignment_has_no_context_fusion_or_alignment_phase(tiny_bert_dir, batch):
    examples, contexts = batch
    model = _model(tiny_bert_dir, context_mode="concat", alignment="none")
    profile = profile_step(model, examples, contexts, repeats=2, warmup=0)
    assert list(profile.phases) == ["text_encoder", "head", "forward_other", "backward", "optimizer"]
    assert profile.phases["text_encoder"].calls_per_step == 1.0
    assert profile.context_tokens is None
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        profile_step(model, examples, contexts, repeats=0)


def _perf_report():
    spec = importlib.util.spec_from_file_location("perf_report", "scripts/perf_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["perf_report"] = module
    spec.loader.exec_module(module)
    return module


def test_bench_step_command_and_the_performance_document(tiny_bert_dir, data_dir, tmp_path):
    from components.benchmarks.shapley import run_shapley_benchmark

    step_json = tmp_path / "perf" / "step.json"
    done = CliRunner().invoke(
        app,
        [
            "bench",
            "step",
            "--override",
            f"model.text_encoder={tiny_bert_dir}",
            "--override",
            "model.align_dim=16",
            "--override",
            "train.batch_size=8",
            "--override",
            f"data.data_dir={data_dir}",
            "--repeats",
            "2",
            "--warmup",
            "0",
            "--output",
            str(step_json),
        ],
    )
    assert done.exit_code == 0, done.output
    step = json.loads(step_json.read_text())
    default = load_config("configs/default.yaml").model
    assert step["config"]["model.alignment"] == default.alignment and step["config"]["train.batch_size"] == "8"
    assert step["batch_source"] == "twitter2017 train, first 8 + blip2 contexts"
    assert "--override model.align_dim=16" in step["command"]

    shapley = run_shapley_benchmark(
        ns=(8,),
        ks=(16,),
        seeds=(0,),
        repeats=1,
        loop_repeats=1,
        include_step=False,
        progress=False,
        coverage_ns=(4,),
        coverage_ts=(8,),
    )
    (tmp_path / "perf" / "shapley.json").write_text(json.dumps(shapley))

    perf = _perf_report()
    seconds = perf.time_command([sys.executable, "-c", "pass"], repeats=3, warmup=1)
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
    for name, baseline, values in (("python", None, seconds), ("python-again", "python", [s + 1.0 for s in seconds])):
        record = {
            "kind": "timing",
            "name": name,
            "label": name,
            "command": "python -c pass",
            "repeats": 3,
            "warmup": 1,
            "before": None,
            "seconds": values,
            **perf.summary(values),
            "baseline": baseline,
            "machine": perf.machine_description(),
            "commit": "0123456789ab",
            "dirty": False,
        }
        (tmp_path / "perf" / f"{name}.json").write_text(json.dumps(record))
    with pytest.raises(RuntimeError, match="exited with 3 on run 1"):
        perf.time_command([sys.executable, "-c", "import sys; sys.exit(3)"], repeats=1)

    text = perf.render_performance_markdown(perf.load_inputs([tmp_path / "perf"]))
    assert "## Shapley estimator benchmark" in text
    row = shapley["rows"][0]
    assert f"| 8 | 16 | {row['vectorized_ms']:.3f} | {row['loop_ms']:.1f} |" in text
    assert "## Cost of one training step on CPU" in text and step["command"] in text
    assert f"| Shapley + contrastive (forward) | {step['phases']['alignment']['median_ms']:.1f} |" in text
    assert f"| **whole step** | {step['step']['median_ms']:.1f} |" in text
    assert "+1.0 s vs `python`" in text  # the baseline difference of medians
    assert perf.machine_description() in text

    (tmp_path / "perf" / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="other.json: not a Shapley benchmark"):
        perf.load_inputs([tmp_path / "perf"])


def test_bench_step_variants_profile_each_override_set_and_their_ratios(tiny_bert_dir, data_dir, tmp_path):
    output = tmp_path / "perf" / "variants.json"
    done = CliRunner().invoke(
        app,
        [
            "bench",
            "step",
            "--override",
            f"model.text_encoder={tiny_bert_dir}",
            "--override",
            "model.align_dim=16",
            "--override",
            "train.batch_size=4",
            "--override",
            f"data.data_dir={data_dir}",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--output",
            str(output),
            "--variant",
            "text:model.context_mode=none,model.alignment=none",
            "--variant",
            "full:model.context_trainable_layers=null",
            "--variant",
            "k0:model.context_trainable_layers=0",
        ],
    )
    assert done.exit_code == 0, done.output
    result = json.loads(output.read_text())
    assert result["baseline"] == "text" and list(result["variants"]) == ["text", "full", "k0"]
    assert result["ratio_to_baseline"]["text"] == 1.0
    for name, profile in result["variants"].items():
        assert result["step_median_ms"][name] == profile["step"]["median_ms"]
        ratio = profile["step"]["median_ms"] / result["step_median_ms"]["text"]
        assert result["ratio_to_baseline"][name] == pytest.approx(ratio, abs=1e-3)
    assert "context_encoder" not in result["variants"]["text"]["phases"]
    assert result["variants"]["k0"]["config"]["model.context_trainable_layers"] == "0"
    assert result["variants"]["full"]["config"]["model.context_trainable_layers"] == "None"
    assert "--variant k0:model.context_trainable_layers=0" in result["command"]
    text = _perf_report().render_performance_markdown(_perf_report().load_inputs([output]))
    assert "## Training step by variant" in text and "| k0 |" in text

    bad = CliRunner().invoke(app, ["bench", "step", "--variant", "no-colon"])
    assert bad.exit_code != 0 and "expected name:section.field=value" in bad.output
