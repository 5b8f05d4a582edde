"""Getting a model: the catalog of published checkpoints, finding them locally, downloading them.

Nothing here downloads unless :func:`download` is called (the user asked). :func:`resolve_model`
only looks: at a local path, in a ``models_dir`` the user chose, and in the standard Hugging Face
cache (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``), where :func:`download` puts files
(resumable, with a progress bar). ``huggingface_hub`` is imported lazily, so importing the engine
stays fast. Headless: no UI imports.

Layout of a ``models_dir`` (for files fetched by hand): either ``DIR/NAME/<files>`` or the files
directly in ``DIR``, e.g. ``DIR/q4_k_m/Voxtral-Mini-4B-Realtime-2602-Q4_K_M.gguf``.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asr.errors import ModelNotFound

_TC_REPO = "handy-computer/Voxtral-Mini-4B-Realtime-2602-GGUF"
# Mirror named by the HF docs index (doc §7.4); its file names are assumed to be the same as the
# handy-computer repo's. [UNCONFIRMED: the mirror's file list was not available to check.]
_TC_MIRROR = "memoravox/Voxtral-Mini-4B-Realtime-2602-gguf"
_MISTRAL_REPO = "mistralai/Voxtral-Mini-4B-Realtime-2602"
_TREVORS_REPO = "TrevorJS/voxtral-mini-realtime-gguf"

DEFAULT_MODEL = "q4_k_m"


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One published checkpoint.

    ``files`` must all be present; each of ``patterns`` (globs, for files whose exact names are
    not known) must match at least one file; ``extra`` are fetched too when they exist but are
    not required. ``load_file`` is the file to hand to ``asr.load_model`` (None: the directory).
    """

    name: str
    format: str
    quant: str
    size_gb: float  # approximate download size, decimal GB
    repo_id: str
    files: tuple[str, ...]
    load_file: str | None = None
    patterns: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()
    note: str = ""

    @property
    def repos(self) -> tuple[str, ...]:
        return (self.repo_id, *self.mirrors)

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"

    @property
    def summary(self) -> str:
        return f"{self.format} {self.quant}, {self.size_gb:.2f} GB"


def _tc_entry(quant: str, size_gb: float, note: str = "") -> CatalogEntry:
    # Repo and file names from transcribe.cpp docs/models/voxtral-realtime.md (download table).
    file = f"Voxtral-Mini-4B-Realtime-2602-{quant}.gguf"
    return CatalogEntry(
        name=quant.lower(),
        format="GGUF (transcribe.cpp)",
        quant=quant,
        size_gb=size_gb,
        repo_id=_TC_REPO,
        files=(file,),
        load_file=file,
        mirrors=(_TC_MIRROR,),
        note=note,
    )


CATALOG: tuple[CatalogEntry, ...] = (
    # transcribe.cpp publishes the same LibriSpeech test-clean WER (2.08 %) for Q4_K_M as for
    # BF16, at a third of the size: the default.
    _tc_entry("Q4_K_M", 2.83, "same LibriSpeech WER as BF16 at a third of the size"),
    _tc_entry("Q5_K_M", 3.28),
    _tc_entry("Q6_K", 3.66),
    _tc_entry("Q8_0", 4.73),
    _tc_entry("F16", 8.88),
    _tc_entry("BF16", 8.87),
    # voxtral-mini-realtime-rs (TrevorS). File names confirmed from several public downloaders;
    # the repo also holds the same GGUF split into shard-aa..shard-ae for browsers.
    CatalogEntry(
        name="q4_0",
        format="GGUF (voxtral-mini-realtime-rs)",
        quant="Q4_0",
        size_gb=2.53,
        repo_id=_TREVORS_REPO,
        files=("voxtral-q4.gguf", "tekken.json"),
        load_file="voxtral-q4.gguf",
        note="community Q4_0; reported 8.49 % FLEURS-en WER vs 4.90 % upstream",
    ),
    # Mistral's original release (consolidated.safetensors 8 859 462 744 bytes).
    CatalogEntry(
        name="mistral-bf16",
        format="Mistral original (safetensors)",
        quant="BF16",
        size_gb=8.88,
        repo_id=_MISTRAL_REPO,
        files=("consolidated.safetensors", "params.json", "tekken.json"),
        note="the reference weights",
    ),
    # The transformers-format files of the same repo. config.json, generation_config.json and
    # processor_config.json are confirmed (transcribe.cpp's converter reads them); the weight file
    # names are [UNCONFIRMED], hence the glob.
    CatalogEntry(
        name="hf-bf16",
        format="Hugging Face transformers",
        quant="BF16",
        size_gb=8.9,
        repo_id=_MISTRAL_REPO,
        files=("config.json", "tekken.json"),
        patterns=("model*.safetensors",),
        extra=("generation_config.json", "processor_config.json", "model.safetensors.index.json"),
        note="transformers layout of the reference weights",
    ),
)

_ALIASES = {"default": DEFAULT_MODEL, "mistral": "mistral-bf16", "hf": "hf-bf16", "trevors": "q4_0"}


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """A catalog entry and where it is present locally (``path`` None: not present)."""

    entry: CatalogEntry
    path: Path | None
    location: str  # "hf-cache", "models-dir" or "" when absent

    @property
    def present(self) -> bool:
        return self.path is not None


class DownloadError(ModelNotFound):
    """A download that could not finish (network, offline mode, access, disk)."""


# ------------------------------------------------------------------------------------- catalog
def catalog() -> tuple[CatalogEntry, ...]:
    return CATALOG


def find_entry(name: str) -> CatalogEntry | None:
    """The catalog entry called ``name`` (case-insensitive; aliases: default, mistral, hf, trevors)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    return next((entry for entry in CATALOG if entry.name == key), None)


def get_entry(name: str) -> CatalogEntry:
    entry = find_entry(name)
    if entry is None:
        raise ModelNotFound(
            f"'{name}' is not a known model name (known: {', '.join(e.name for e in CATALOG)}); "
            "run `voxcap models` to list them"
        )
    return entry


# ----------------------------------------------------------------------------- where things are
def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache in force now (environment read at call time, not import time)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _usable(path: Path) -> bool:
    # An empty file is a failed manual copy, not a model.
    return path.is_file() and path.stat().st_size > 0


def _complete_in(directory: Path, entry: CatalogEntry) -> bool:
    if not all(_usable(directory / name) for name in entry.files):
        return False
    return all(any(_usable(p) for p in directory.glob(pattern)) for pattern in entry.patterns)


def _load_path(directory: Path, entry: CatalogEntry) -> Path:
    return directory / entry.load_file if entry.load_file else directory


def _find_in_models_dir(entry: CatalogEntry, models_dir: Path) -> Path | None:
    for directory in (models_dir / entry.name, models_dir):
        if directory.is_dir() and _complete_in(directory, entry):
            return _load_path(directory, entry)
    return None


def _find_in_hf_cache(entry: CatalogEntry, cache_dir: Path) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for repo_id in entry.repos:
        found = [try_to_load_from_cache(repo_id, name, cache_dir=str(cache_dir)) for name in entry.files]
        if not all(isinstance(path, str) for path in found):
            continue  # missing, or recorded as absent from the repo (_CACHED_NO_EXIST)
        # All files of one entry must come from one snapshot, so a GGUF's tekken.json is beside it.
        snapshots = {Path(path).parent for path in found}
        if len(snapshots) == 1 and _complete_in(snapshot := snapshots.pop(), entry):
            return _load_path(snapshot, entry)
    return None


def locate(
    entry: CatalogEntry, models_dir: str | Path | None = None, *, cache_dir: str | Path | None = None
) -> ModelStatus:
    """Where ``entry`` is present: ``models_dir`` first (the user's own choice), then the HF cache."""
    if models_dir is not None:
        path = _find_in_models_dir(entry, Path(models_dir).expanduser())
        if path is not None:
            return ModelStatus(entry, path, "models-dir")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else hf_cache_dir()
    path = _find_in_hf_cache(entry, cache)
    return ModelStatus(entry, path, "hf-cache" if path is not None else "")


def list_models(
    models_dir: str | Path | None = None, *, cache_dir: str | Path | None = None
) -> list[ModelStatus]:
    """Every catalog entry with its local presence."""
    return [locate(entry, models_dir, cache_dir=cache_dir) for entry in CATALOG]


def resolve_model(
    name_or_path: str | Path, models_dir: str | Path | None = None, *, cache_dir: str | Path | None = None
) -> Path:
    """The local path to load for ``name_or_path``; never downloads.

    A path that exists (file or directory) is returned as is. A known model name resolves to its
    files in ``models_dir`` or the Hugging Face cache. Anything else raises :class:`ModelNotFound`
    whose message says what to run or where to put the files.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text and path.exists():
        return path
    entry = find_entry(text) if text else None
    if entry is None:
        raise ModelNotFound(
            f"no model file or directory at '{text}', and it is not a known model name "
            f"(known: {', '.join(e.name for e in CATALOG)}); run `voxcap models` to list them, "
            f"or `voxcap models download {DEFAULT_MODEL}` for the default"
        )
    status = locate(entry, models_dir, cache_dir=cache_dir)
    if status.path is not None:
        return status.path
    raise ModelNotFound(_not_present_message(entry, models_dir))


def _not_present_message(entry: CatalogEntry, models_dir: str | Path | None) -> str:
    place = Path(models_dir).expanduser() / entry.name if models_dir is not None else None
    files = " + ".join([*entry.files, *entry.patterns])
    where = (
        f"put {files} from {entry.url} in {place}" if place else f"put {files} from {entry.url} in a folder"
    )
    return (
        f"model '{entry.name}' ({entry.summary}) is not downloaded: "
        f"run `voxcap models download {entry.name}`, or {where} and pass --model PATH"
    )


# ------------------------------------------------------------------------------------ download
def _silent_tqdm() -> type:
    from tqdm.auto import tqdm

    class SilentTqdm(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentTqdm


def download(
    name: str,
    progress: bool = True,
    *,
    local_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    tqdm_class: type | None = None,
    token: str | bool | None = None,
) -> Path:
    """Fetch catalog model ``name`` (resumable) and return the path to load.

    Files go to the Hugging Face cache (``cache_dir`` or ``HF_HUB_CACHE``), or to ``local_dir``
    when given (then ``resolve_model(name, models_dir=local_dir.parent)`` finds them if
    ``local_dir`` is ``models_dir/name``). ``tqdm_class`` lets a UI draw its own progress.
    Failures raise :class:`DownloadError` (a :class:`ModelNotFound`) saying what to do.
    """
    entry = get_entry(name)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else hf_cache_dir()
    target = Path(local_dir).expanduser() if local_dir is not None else None
    if _env_flag("HF_HUB_OFFLINE"):
        already = _find_in_models_dir(entry, target) if target else _find_in_hf_cache(entry, cache)
        if already is not None:
            return already
        raise DownloadError(_offline_message(entry, target, "HF_HUB_OFFLINE is set"))
    bar = tqdm_class if tqdm_class is not None else (None if progress else _silent_tqdm())
    last_missing: Exception | None = None
    for repo_id in entry.repos:
        try:
            directory = _fetch(entry, repo_id, cache, target, bar, token)
        except Exception as error:
            kind = _classify(error)
            if kind == "unknown":
                raise  # a bug, not a download problem: keep the traceback
            if kind == "missing":
                last_missing = error
                continue  # try the mirror
            raise _download_error(entry, repo_id, target, cache, error, kind) from error
        if directory is not None and _complete_in(directory, entry):
            return _load_path(directory, entry)
        last_missing = FileNotFoundError(f"{repo_id} lacks {', '.join([*entry.files, *entry.patterns])}")
    raise DownloadError(
        f"could not find {', '.join([*entry.files, *entry.patterns])} in {' or '.join(entry.repos)} "
        f"({_short(last_missing)}): the catalog may be out of date, or the repository needs a login "
        f"(set HF_TOKEN); download the files from {entry.url} by hand and pass --model PATH"
    )


def _fetch(
    entry: CatalogEntry,
    repo_id: str,
    cache: Path,
    target: Path | None,
    bar: type | None,
    token: str | bool | None,
) -> Path | None:
    from huggingface_hub import hf_hub_download, snapshot_download

    where: dict[str, Any] = {"local_dir": str(target)} if target else {"cache_dir": str(cache)}
    if target:
        target.mkdir(parents=True, exist_ok=True)
    if len(entry.files) == 1 and not entry.patterns and not entry.extra:
        # One file: hf_hub_download draws a byte progress bar and resumes a partial download.
        path = hf_hub_download(repo_id, entry.files[0], tqdm_class=bar, token=token, **where)
        return Path(path).parent
    patterns = [*entry.files, *entry.patterns, *entry.extra]
    path = snapshot_download(repo_id, allow_patterns=patterns, tqdm_class=bar, token=token, **where)
    return Path(path)


def _classify(error: Exception) -> str:
    from huggingface_hub import errors as hf_errors

    if isinstance(error, hf_errors.GatedRepoError):
        return "gated"
    if isinstance(error, hf_errors.RepositoryNotFoundError | hf_errors.RemoteEntryNotFoundError):
        return "missing"
    if isinstance(error, hf_errors.RevisionNotFoundError):
        return "missing"
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk"
    if isinstance(error, PermissionError):
        return "permission"
    if isinstance(error, hf_errors.OfflineModeIsEnabled):
        return "offline"
    if isinstance(error, hf_errors.LocalEntryNotFoundError | ConnectionError | TimeoutError):
        return "network"  # huggingface_hub raises LocalEntryNotFoundError when the hub is unreachable
    if isinstance(error, hf_errors.HfHubHTTPError):
        return "http"
    try:
        import httpx

        if isinstance(error, httpx.TransportError):
            return "network"
    except ImportError:  # pragma: no cover - httpx ships with huggingface_hub >= 1.0
        pass
    if type(error).__module__.split(".")[0] in {"requests", "urllib3", "httpx"}:
        return "network"
    return "unknown"


def _short(error: BaseException | None) -> str:
    """``Type: first line`` of the innermost cause (the socket error, not the wrapper's prose)."""
    if error is None:
        return "unknown error"
    seen: set[int] = set()
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(error))
        error = inner
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}"[:160]


def _offline_message(entry: CatalogEntry, target: Path | None, reason: str) -> str:
    place = target if target else f"a folder such as ~/models/{entry.name}"
    files = " + ".join([*entry.files, *entry.patterns])
    return (
        f"cannot download '{entry.name}' ({reason}): check the network connection and proxy settings "
        f"(HTTPS_PROXY), unset HF_HUB_OFFLINE if it is set, and rerun `voxcap models download {entry.name}`; "
        f"or fetch {files} from {entry.url} on another machine into {place} and pass --model PATH"
    )


def _download_error(
    entry: CatalogEntry, repo_id: str, target: Path | None, cache: Path, error: Exception, kind: str
) -> DownloadError:
    if kind == "gated":
        return DownloadError(
            f"https://huggingface.co/{repo_id} requires accepting its terms: open it, accept, then log in "
            f"(`hf auth login`) or set HF_TOKEN, and rerun `voxcap models download {entry.name}`"
        )
    if kind == "disk":
        where = target if target else cache
        return DownloadError(
            f"no disk space left in {where} for '{entry.name}' ({entry.size_gb:.2f} GB): free space or set "
            "HF_HUB_CACHE to a larger disk; the partial download resumes when rerun"
        )
    if kind == "permission":
        where = target if target else cache
        return DownloadError(
            f"cannot write to {where} ({_short(error)}): fix its permissions or set HF_HUB_CACHE "
            "to a writable folder"
        )
    if kind == "offline":
        return DownloadError(_offline_message(entry, target, "HF_HUB_OFFLINE is set"))
    return DownloadError(_offline_message(entry, target, f"huggingface.co unreachable: {_short(error)}"))


def describe(status: ModelStatus) -> str:
    """One-line human description, e.g. for a first-run prompt."""
    entry = status.entry
    where = f"present at {status.path}" if status.path else "not downloaded"
    return f"{entry.name}: {entry.summary} from {entry.repo_id} ({where})"


__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "CatalogEntry",
    "DownloadError",
    "ModelNotFound",
    "ModelStatus",
    "catalog",
    "describe",
    "download",
    "find_entry",
    "get_entry",
    "hf_cache_dir",
    "list_models",
    "locate",
    "resolve_model",
]
