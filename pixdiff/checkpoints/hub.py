"""Hugging Face Hub sources, `hf-hub:ORG/REPO[@REVISION][:FILE]` (timm's and open_clip's spelling),
fetched into the Hub's own cache with `huggingface_hub` (the `hub` extra), which honours
HF_HUB_OFFLINE, HF_HOME and HF_HUB_CACHE. Nothing is fetched unless a source names the Hub.

Without FILE (or with FILE naming a folder) the file is, in this order: `model.safetensors` (as timm
and diffusers name it), `transformer/diffusion_pytorch_model.safetensors` (a diffusers folder, as
Bili-Sakura/PixNerd-diffusers's converter writes one), else the folder's only checkpoint file; more
than one is one error line listing them. Offline, the files are those of the cached snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from pixdiff.checkpoints.store import CheckpointError

PREFIX = "hf-hub:"
SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")
PREFERRED = ("model.safetensors", "transformer/diffusion_pytorch_model.safetensors")
INSTALL = "pip install 'pixdiff[hub]'"
_REPO = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class HubSource:
    repo: str  # ORG/REPO
    revision: str | None = None  # a branch, tag or commit; None: main
    file: str | None = None  # a file or folder in the repository; None: the root's checkpoint

    def __str__(self) -> str:
        return PREFIX + self.repo + (f"@{self.revision}" if self.revision else "") + (f":{self.file}" if self.file
                                                                                      else "")


def is_hub(source: object) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def parse(source: str) -> HubSource:
    """`hf-hub:ORG/REPO[@REVISION][:FILE]` -> its parts, or one error line."""
    where, colon, file = source.removeprefix(PREFIX).partition(":")
    repo, at, revision = where.partition("@")
    if not _REPO.fullmatch(repo) or (at and not revision) or (colon and not file.strip("/")):
        raise CheckpointError(f"{source!r} is not a hub source: write hf-hub:ORG/REPO[@REVISION][:FILE]")
    return HubSource(repo, revision or None, file.strip("/") or None)


def choose(names: Sequence[str], folder: str | None, source: HubSource) -> str:
    """The checkpoint file among a repository's `names` in `folder` (None: the root), by the rule above."""
    base = f"{folder}/" if folder else ""
    inside = sorted(n.removeprefix(base) for n in names if n.startswith(base))
    for name in PREFERRED:
        if name in inside:
            return base + name
    found = [n for n in inside if n.endswith(SUFFIXES) and "/" not in n]
    if len(found) == 1:
        return base + found[0]
    if not found:
        raise CheckpointError(f"{source} holds no checkpoint file ({', '.join(SUFFIXES)}) in "
                              f"{folder or 'its root'}; name one as {source}:FILE")
    raise CheckpointError(f"{source} holds several checkpoint files: {', '.join(found)}; name one as "
                          f"{source}:FILE")


def _hub() -> ModuleType:
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
        import huggingface_hub.utils
    except ImportError:
        raise CheckpointError(f"hub sources need huggingface_hub: {INSTALL}") from None
    # one error line, not the transport's retry warnings (5 of them, 30 s, with no network)
    huggingface_hub.utils.logging.set_verbosity_error()
    return huggingface_hub


def _listing(hf: ModuleType, src: HubSource) -> list[str]:
    """The repository's files at the revision: from the Hub, or offline from the cached snapshot."""
    if not hf.constants.is_offline_mode():
        return list(hf.list_repo_files(src.repo, revision=src.revision))
    snapshot = Path(hf.snapshot_download(src.repo, revision=src.revision, local_files_only=True))
    return [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]


def _errors(hf: ModuleType) -> tuple[type[Exception], ...]:
    """What huggingface_hub raises for a repository, revision or file it cannot find or reach."""
    return hf.errors.HfHubHTTPError, hf.errors.EntryNotFoundError, hf.errors.HFValidationError


def download(src: HubSource) -> Path:
    """The local path of `src`'s checkpoint file, downloaded into the Hub cache unless it is there."""
    hf = _hub()
    try:
        names = None if src.file and src.file.endswith(SUFFIXES) else _listing(hf, src)
        name = src.file if names is None else choose(names, src.file, src)
        return Path(hf.hf_hub_download(src.repo, name, revision=src.revision))
    except (hf.errors.LocalEntryNotFoundError, hf.errors.OfflineModeIsEnabled):
        offline = " (HF_HUB_OFFLINE is set)" if hf.constants.is_offline_mode() else ""
        raise CheckpointError(f"{src} is not in the local hub cache {hf.constants.HF_HUB_CACHE}{offline}") from None
    except _errors(hf) as e:  # the Hub explains on several lines; the first says what is missing
        reason = (str(e).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(f"{src}: {type(e).__name__}: {reason}") from None
    except Exception as e:  # noqa: BLE001 - the transport's classes differ between huggingface_hub versions
        if not _unreachable(e):
            raise
        raise CheckpointError(f"{src}: cannot reach the Hub ({type(e).__name__}: {str(e)[:120]}); files already "
                              f"in {hf.constants.HF_HUB_CACHE} load with HF_HUB_OFFLINE=1") from None


def _unreachable(e: Exception) -> bool:
    """A network failure of the Hub's transport (httpx's TransportError, requests' ConnectionError, OSError)."""
    return isinstance(e, OSError) or any(c.__name__ in ("TransportError", "ConnectionError", "TimeoutException")
                                         for c in type(e).__mro__)


def file_digest(path: Path) -> str:
    """sha256 of a downloaded file. The Hub cache names a large (LFS) file's blob by exactly that, so
    it is read off the blob's name when the cache links to one; other files are hashed."""
    from pixdiff.eval.inception import file_sha256

    blob = path.resolve()
    if blob.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return blob.name
    return file_sha256(path)

