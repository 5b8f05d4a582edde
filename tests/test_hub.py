"""Model catalog, local resolution and download plumbing, up to the network boundary.

huggingface_hub's download functions are replaced by fakes that write into a temporary HF cache
(HF_HUB_CACHE) in the hub's own layout; huggingface_hub's `scan_cache_dir` and
`try_to_load_from_cache` check that layout independently. Nothing here touches the network.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import huggingface_hub
import pytest
from huggingface_hub import errors as hf_errors

from asr import hub
from asr.errors import AsrError, ModelNotFound
from tui import cli

TC_REPO = "handy-computer/Voxtral-Mini-4B-Realtime-2602-GGUF"
Q4KM_FILE = "Voxtral-Mini-4B-Realtime-2602-Q4_K_M.gguf"
REPO_ROOT = Path(__file__).resolve().parent.parent


def _response(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/x"))


def put_in_cache(cache: Path, repo_id: str, files: dict[str, bytes], sha: str = "a" * 40) -> Path:
    """Write files the way huggingface_hub stores them: blobs + snapshot symlinks + refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "hf-cache"
    directory.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(directory))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return directory


@pytest.fixture
def no_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


# --------------------------------------------------------------------------------------- catalog
def test_catalog_is_consistent() -> None:
    names = [entry.name for entry in hub.CATALOG]
    assert len(names) == len(set(names))
    assert hub.find_entry(hub.DEFAULT_MODEL) is not None and hub.DEFAULT_MODEL == "q4_k_m"
    for entry in hub.CATALOG:
        assert entry.files and entry.repo_id.count("/") == 1 and entry.size_gb > 0
        assert entry.load_file is None or entry.load_file in entry.files
    sizes = {e.quant: e.size_gb for e in hub.CATALOG if e.repo_id == TC_REPO}
    # doc §7.4 / transcribe.cpp's download table
    assert sizes == {"BF16": 8.87, "F16": 8.88, "Q8_0": 4.73, "Q6_K": 3.66, "Q5_K_M": 3.28, "Q4_K_M": 2.83}
    trevors = hub.get_entry("q4_0")
    assert trevors.files == ("voxtral-q4.gguf", "tekken.json")  # the GGUF has no tokenizer inside
    assert set(hub.get_entry("mistral-bf16").files) == {
        "consolidated.safetensors",
        "params.json",
        "tekken.json",
    }


def test_names_are_case_insensitive_with_aliases() -> None:
    assert hub.get_entry("Q4_K_M").name == "q4_k_m"
    assert hub.get_entry("default").name == hub.DEFAULT_MODEL
    assert hub.get_entry("mistral").name == "mistral-bf16"
    with pytest.raises(ModelNotFound, match="not a known model name .*voxcap models"):
        hub.get_entry("q3_k")


# ------------------------------------------------------------------------------------ resolution
def test_local_paths_are_used_as_is(tmp_path, no_network) -> None:
    gguf_file = tmp_path / "any-name.gguf"
    gguf_file.write_bytes(b"GGUF")
    assert hub.resolve_model(gguf_file) == gguf_file
    assert hub.resolve_model(str(tmp_path)) == tmp_path
    # A file that happens to be called like a catalog name is still a path.
    named = tmp_path / "q4_k_m"
    named.write_bytes(b"x")
    assert hub.resolve_model(named) == named


def test_home_is_expanded(tmp_path, monkeypatch, no_network) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert hub.resolve_model("~/m.gguf") == tmp_path / "m.gguf"


def test_unknown_name_and_missing_path(cache, no_network) -> None:
    with pytest.raises(ModelNotFound) as info:
        hub.resolve_model("/no/such/model.gguf")
    message = str(info.value)
    assert "/no/such/model.gguf" in message and "voxcap models" in message and "\n" not in message
    assert isinstance(info.value, AsrError) and isinstance(info.value, FileNotFoundError)


def test_known_name_not_present_says_what_to_run(cache, no_network, tmp_path) -> None:
    with pytest.raises(ModelNotFound) as info:
        hub.resolve_model("q4_k_m")
    message = str(info.value)
    assert "voxcap models download q4_k_m" in message and Q4KM_FILE in message and "\n" not in message
    with pytest.raises(ModelNotFound, match=str(tmp_path / "models" / "q4_0")):
        hub.resolve_model("q4_0", tmp_path / "models")


def test_resolves_from_the_hf_cache(cache, no_network) -> None:
    snapshot = put_in_cache(cache, TC_REPO, {Q4KM_FILE: b"GGUF-q4km"})
    scanned = huggingface_hub.scan_cache_dir(cache)  # our fake layout is a valid HF cache
    assert {repo.repo_id for repo in scanned.repos} == {TC_REPO}
    path = hub.resolve_model("q4_k_m")
    assert path == snapshot / Q4KM_FILE and path.read_bytes() == b"GGUF-q4km"
    assert hub.resolve_model("default") == path
    with pytest.raises(ModelNotFound):
        hub.resolve_model("q8_0")  # another file of the same repo is not there


def test_resolves_from_the_mirror(cache, no_network) -> None:
    snapshot = put_in_cache(cache, "memoravox/Voxtral-Mini-4B-Realtime-2602-gguf", {Q4KM_FILE: b"GGUF"})
    assert hub.resolve_model("q4_k_m") == snapshot / Q4KM_FILE


def test_explicit_cache_dir_argument(tmp_path, no_network, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    snapshot = put_in_cache(tmp_path / "mine", TC_REPO, {Q4KM_FILE: b"GGUF"})
    assert hub.resolve_model("q4_k_m", cache_dir=tmp_path / "mine") == snapshot / Q4KM_FILE


def test_hf_home_is_honoured(tmp_path, monkeypatch, no_network) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.hf_cache_dir() == tmp_path / "home" / "hub"
    snapshot = put_in_cache(tmp_path / "home" / "hub", TC_REPO, {Q4KM_FILE: b"GGUF"})
    assert hub.resolve_model("q4_k_m") == snapshot / Q4KM_FILE


def test_multi_file_entries_need_every_file_in_one_snapshot(cache, no_network) -> None:
    put_in_cache(cache, "TrevorJS/voxtral-mini-realtime-gguf", {"voxtral-q4.gguf": b"GGUF"})
    assert not hub.locate(hub.get_entry("q4_0")).present  # tekken.json missing
    snapshot = put_in_cache(cache, "TrevorJS/voxtral-mini-realtime-gguf", {"tekken.json": b"{}"})
    assert hub.resolve_model("q4_0") == snapshot / "voxtral-q4.gguf"
    assert (snapshot / "tekken.json").is_file()  # beside the GGUF, where the loader looks


def test_original_and_hf_layouts_resolve_to_the_directory(cache, no_network) -> None:
    repo = "mistralai/Voxtral-Mini-4B-Realtime-2602"
    snapshot = put_in_cache(
        cache, repo, {"consolidated.safetensors": b"w", "params.json": b"{}", "tekken.json": b"{}"}
    )
    assert hub.resolve_model("mistral-bf16") == snapshot
    with pytest.raises(ModelNotFound):
        hub.resolve_model("hf-bf16")  # no config.json / model*.safetensors yet
    put_in_cache(cache, repo, {"config.json": b"{}"})
    with pytest.raises(ModelNotFound):
        hub.resolve_model("hf-bf16")  # the weight glob must match too
    put_in_cache(cache, repo, {"model-00001-of-00002.safetensors": b"w1"})
    assert hub.resolve_model("hf-bf16") == snapshot


def test_cached_absence_is_not_presence(cache, no_network) -> None:
    sha = "b" * 40
    put_in_cache(cache, TC_REPO, {"README.md": b"card"}, sha=sha)
    no_exist = cache / f"models--{TC_REPO.replace('/', '--')}" / ".no_exist" / sha
    no_exist.mkdir(parents=True)
    (no_exist / Q4KM_FILE).touch()
    assert huggingface_hub.try_to_load_from_cache(TC_REPO, Q4KM_FILE, cache_dir=cache) is not None
    assert not hub.locate(hub.get_entry("q4_k_m")).present


def test_models_dir_layouts_and_priority(cache, tmp_path, no_network) -> None:
    models = tmp_path / "models"
    (models / "q4_k_m").mkdir(parents=True)
    (models / "q4_k_m" / Q4KM_FILE).write_bytes(b"GGUF-mine")
    put_in_cache(cache, TC_REPO, {Q4KM_FILE: b"GGUF-cache"})
    assert hub.resolve_model("q4_k_m", models) == models / "q4_k_m" / Q4KM_FILE  # the user's folder wins
    assert hub.locate(hub.get_entry("q4_k_m"), models).location == "models-dir"
    # Flat layout: the files directly in the folder.
    (models / "voxtral-q4.gguf").write_bytes(b"GGUF")
    assert not hub.locate(hub.get_entry("q4_0"), models).present
    (models / "tekken.json").write_bytes(b"{}")
    assert hub.resolve_model("q4_0", models) == models / "voxtral-q4.gguf"
    # An empty file is a failed copy, not a model.
    (models / "q8_0").mkdir()
    (models / "q8_0" / "Voxtral-Mini-4B-Realtime-2602-Q8_0.gguf").touch()
    assert not hub.locate(hub.get_entry("q8_0"), models).present


def test_list_models_marks_presence(cache, no_network) -> None:
    put_in_cache(cache, TC_REPO, {Q4KM_FILE: b"GGUF"})
    statuses = hub.list_models()
    assert [s.entry.name for s in statuses] == [e.name for e in hub.CATALOG]
    present = {s.entry.name: s.location for s in statuses if s.present}
    assert present == {"q4_k_m": "hf-cache"}


# -------------------------------------------------------------------------------------- download
class FakeHub:
    """Stands in for huggingface_hub's download functions: records the calls and writes files the
    way the hub would (into the cache layout, or into local_dir)."""

    def __init__(self, cache: Path, repo_files: dict[str, dict[str, bytes]]) -> None:
        self.cache = cache
        self.repo_files = repo_files
        self.calls: list[tuple[str, dict]] = []

    def _files(self, repo_id: str) -> dict[str, bytes]:
        if repo_id not in self.repo_files:
            raise hf_errors.RepositoryNotFoundError(f"404 {repo_id}", response=_response(404))
        return self.repo_files[repo_id]

    def _write(
        self, repo_id: str, files: dict[str, bytes], local_dir: str | None, cache_dir: str | None
    ) -> Path:
        if local_dir is not None:
            for name, data in files.items():
                (Path(local_dir) / name).write_bytes(data)
            return Path(local_dir)
        return put_in_cache(Path(cache_dir), repo_id, files)

    def hf_hub_download(self, repo_id, filename, **kwargs) -> str:
        self.calls.append(("hf_hub_download", {"repo_id": repo_id, "filename": filename, **kwargs}))
        files = self._files(repo_id)
        if filename not in files:
            raise hf_errors.RemoteEntryNotFoundError(f"404 {filename}", response=_response(404))
        where = self._write(
            repo_id, {filename: files[filename]}, kwargs.get("local_dir"), kwargs.get("cache_dir")
        )
        return str(where / filename)

    def snapshot_download(self, repo_id, **kwargs) -> str:
        self.calls.append(("snapshot_download", {"repo_id": repo_id, **kwargs}))
        import fnmatch

        patterns = kwargs.get("allow_patterns") or ["*"]
        files = {
            n: d for n, d in self._files(repo_id).items() if any(fnmatch.fnmatch(n, p) for p in patterns)
        }
        return str(self._write(repo_id, files, kwargs.get("local_dir"), kwargs.get("cache_dir")))


@pytest.fixture
def fake_hub(cache, monkeypatch) -> FakeHub:
    fake = FakeHub(
        cache,
        {
            TC_REPO: {Q4KM_FILE: b"GGUF-q4km", "README.md": b"card"},
            "TrevorJS/voxtral-mini-realtime-gguf": {
                "voxtral-q4.gguf": b"GGUF-q40",
                "tekken.json": b"{}",
                "shard-aa": b"G",
            },
            "mistralai/Voxtral-Mini-4B-Realtime-2602": {
                "consolidated.safetensors": b"w",
                "params.json": b"{}",
                "tekken.json": b"{}",
                "config.json": b"{}",
                "model-00001-of-00002.safetensors": b"a",
                "model-00002-of-00002.safetensors": b"b",
                "model.safetensors.index.json": b"{}",
                "generation_config.json": b"{}",
            },
        },
    )
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    return fake


def test_download_single_gguf_into_the_cache(fake_hub, cache) -> None:
    path = hub.download("q4_k_m")
    assert path.read_bytes() == b"GGUF-q4km"
    (kind, call), *_ = fake_hub.calls
    assert kind == "hf_hub_download" and call["repo_id"] == TC_REPO and call["filename"] == Q4KM_FILE
    assert call["cache_dir"] == str(cache) and call["tqdm_class"] is None  # default bar
    assert hub.resolve_model("q4_k_m") == path  # and now it resolves without the network


def test_download_without_progress_passes_a_silent_bar(fake_hub) -> None:
    hub.download("q4_k_m", progress=False)
    bar = fake_hub.calls[0][1]["tqdm_class"]
    assert bar is not None and bar(total=10).disable


def test_download_multi_file_entries_use_one_snapshot(fake_hub, cache) -> None:
    path = hub.download("q4_0")
    assert path.name == "voxtral-q4.gguf" and (path.parent / "tekken.json").is_file()
    kind, call = fake_hub.calls[0]
    assert kind == "snapshot_download" and call["allow_patterns"] == ["voxtral-q4.gguf", "tekken.json"]
    assert not (path.parent / "shard-aa").exists()  # only what the entry needs
    path = hub.download("hf-bf16")
    assert sorted(p.name for p in path.glob("model-*.safetensors")) == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert not (path / "consolidated.safetensors").exists()


def test_download_into_a_models_dir(fake_hub, tmp_path, cache) -> None:
    models = tmp_path / "models"
    path = hub.download("q4_k_m", local_dir=models / "q4_k_m")
    assert path == models / "q4_k_m" / Q4KM_FILE
    assert fake_hub.calls[0][1]["local_dir"] == str(models / "q4_k_m")
    assert "cache_dir" not in fake_hub.calls[0][1]
    assert hub.resolve_model("q4_k_m", models) == path


def test_download_falls_back_to_the_mirror(fake_hub, cache) -> None:
    mirror = "memoravox/Voxtral-Mini-4B-Realtime-2602-gguf"
    fake_hub.repo_files[mirror] = fake_hub.repo_files.pop(TC_REPO)
    path = hub.download("q4_k_m")
    assert [call["repo_id"] for _, call in fake_hub.calls] == [TC_REPO, mirror]
    assert hub.resolve_model("q4_k_m") == path


def test_download_of_a_file_missing_everywhere(fake_hub) -> None:
    fake_hub.repo_files["TrevorJS/voxtral-mini-realtime-gguf"].pop("tekken.json")
    with pytest.raises(hub.DownloadError, match="catalog may be out of date") as info:
        hub.download("q4_0")
    assert "https://huggingface.co/TrevorJS/voxtral-mini-realtime-gguf" in str(info.value)
    with pytest.raises(ModelNotFound, match="not a known model name"):
        hub.download("q9_9")


def _raising(error: BaseException):
    def fake(*args, **kwargs):
        raise error

    return fake


def _network_error() -> Exception:
    try:
        try:
            raise httpx.ConnectError("[Errno -2] Name or service not known")
        except httpx.ConnectError as inner:
            raise hf_errors.LocalEntryNotFoundError(
                "An error happened while trying to locate the file"
            ) from inner
    except hf_errors.LocalEntryNotFoundError as outer:
        return outer


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            _network_error(),
            ["Name or service not known", "HTTPS_PROXY", "HF_HUB_OFFLINE", "voxcap models download"],
        ),
        (httpx.ConnectTimeout("timed out"), ["timed out", "HTTPS_PROXY"]),
        (hf_errors.OfflineModeIsEnabled("offline"), ["HF_HUB_OFFLINE is set"]),
        (
            hf_errors.GatedRepoError("gated", response=_response(403)),
            ["requires accepting its terms", "HF_TOKEN", "hf auth login"],
        ),
        (OSError(errno.ENOSPC, "No space left on device"), ["no disk space", "HF_HUB_CACHE"]),
        (PermissionError(errno.EACCES, "Permission denied"), ["cannot write", "HF_HUB_CACHE"]),
    ],
)
def test_download_errors_are_one_clear_line(cache, monkeypatch, error, expected) -> None:
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _raising(error))
    with pytest.raises(hub.DownloadError) as info:
        hub.download("q4_k_m")
    message = str(info.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message


def test_unexpected_errors_are_not_disguised(cache, monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _raising(KeyError("bug")))
    with pytest.raises(KeyError):
        hub.download("q4_k_m")


def test_offline_mode_never_calls_the_hub(cache, no_network, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.DownloadError, match="HF_HUB_OFFLINE is set") as info:
        hub.download("q4_0")
    assert "voxtral-q4.gguf + tekken.json" in str(info.value)
    snapshot = put_in_cache(cache, TC_REPO, {Q4KM_FILE: b"GGUF"})
    assert hub.download("q4_k_m") == snapshot / Q4KM_FILE  # already here: fine offline


# -------------------------------------------------------------------------------------------- CLI
def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_lists_the_catalog_and_what_is_present(cache, tmp_path) -> None:
    snapshot = put_in_cache(cache, TC_REPO, {Q4KM_FILE: b"GGUF"})
    models = tmp_path / "models"
    (models / "q4_0").mkdir(parents=True)
    (models / "q4_0" / "voxtral-q4.gguf").write_bytes(b"GGUF")
    (models / "q4_0" / "tekken.json").write_bytes(b"{}")
    (models / "my-own.gguf").write_bytes(b"GGUF")
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    result = _run_cli("models", "--models-dir", str(models), env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "FORMAT", "QUANT", "SIZE"]
    for entry in hub.CATALOG:
        assert any(line.startswith(entry.name) for line in lines), entry.name
    row = next(line for line in lines if line.startswith("q4_k_m"))
    assert "(default)" in row and "2.83 GB" in row and TC_REPO in row and str(snapshot / Q4KM_FILE) in row
    assert str(models / "q4_0" / "voxtral-q4.gguf") in next(line for line in lines if line.startswith("q4_0"))
    assert next(line for line in lines if line.startswith("q8_0")).rstrip().endswith("-")
    assert "2 of 9 present" in result.stdout and str(models / "my-own.gguf") in result.stdout


def test_cli_errors_are_one_line_with_the_fix(cache) -> None:
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    result = _run_cli("models", "download", "q4_k_m", env=env)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("voxcap: error:")]
    assert len(error_lines) == 1 and "HF_HUB_OFFLINE" in error_lines[0] and "Traceback" not in result.stderr
    result = _run_cli("models", "path", "q4_k_m", env=env)
    assert result.returncode == 2 and "voxcap models download q4_k_m" in result.stderr
    result = _run_cli("models", "download", "nope", env=env)
    assert result.returncode == 2 and "not a known model name" in result.stderr


def test_cli_download_plumbing(fake_hub, tmp_path, capsys) -> None:
    assert cli.main(["models", "download", "Q4_K_M", "--quiet"]) == 0
    (_, call), *_ = fake_hub.calls
    assert call["filename"] == Q4KM_FILE and call["tqdm_class"] is not None  # --quiet: silent bar
    out = capsys.readouterr()
    assert "q4_k_m ready:" in out.out and "voxcap --model q4_k_m" in out.err
    assert cli.main(["models", "download", "q4_k_m"]) == 0  # already present: no second download
    assert len(fake_hub.calls) == 1 and "already here" in capsys.readouterr().out
    models = tmp_path / "models"
    assert cli.main(["models", "--models-dir", str(models), "download", "q4_0"]) == 0
    assert fake_hub.calls[-1][1]["local_dir"] == str(models / "q4_0")
    assert cli.main(["models", "path", "q4_0", "--models-dir", str(models)]) == 0
    assert capsys.readouterr().out.strip().endswith(str(models / "q4_0" / "voxtral-q4.gguf"))


def test_cli_interrupted_download_says_it_resumes(cache, monkeypatch, capsys) -> None:
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _raising(KeyboardInterrupt()))
    assert cli.main(["models", "download", "q4_k_m"]) == 130
    assert "resumes where it stopped" in capsys.readouterr().err
