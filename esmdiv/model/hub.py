"""Hugging Face model ids (``facebook/esm2_t33_650M_UR50D``) resolved to a folder through ``huggingface_hub``.

An id is resolved the way ``transformers`` resolves it, so a model a user already has in their
Hugging Face cache is found without a download:

- the cache folder is ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``huggingface_hub``'s default
  (``~/.cache/huggingface/hub``), read when the model is loaded (not when esmdiv is imported);
- ``HF_HUB_OFFLINE=1`` looks in the cache only (``local_files_only``); otherwise the Hub is asked
  for the files that are missing, and the cache is used when the Hub cannot be reached;
- the token is ``huggingface_hub``'s own (``HF_TOKEN``, or ``hf auth login``'s saved token).

Only what esmdiv reads is fetched: ``config.json`` and the safetensors weights (one file or shards
with their ``*.safetensors.index.json``), else ``pytorch_model.bin`` (one file or shards). Nothing
from the repository is imported or run; :mod:`esmdiv.model.loading` reads the folder as any local
Hugging Face folder (safetensors, or ``torch.load(weights_only=True)``).

``huggingface_hub`` is optional (``pip install 'esmdiv[hf]'``); without it an id is exit 3.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from esmdiv.errors import EnvironmentUnavailable, InputError

#: What esmdiv reads from a repository, safetensors first (a second request fetches the pickle
#: format only for a repository that has no safetensors).
SAFETENSORS_PATTERNS = ("config.json", "*.safetensors", "*.safetensors.index.json")
PICKLE_PATTERNS = ("config.json", "pytorch_model.bin", "pytorch_model*.bin", "pytorch_model.bin.index.json")
INSTALL_HINT = "pip install 'esmdiv[hf]'"
# <owner>/<name>, as the Hub spells ids: letters, digits, '-', '_', '.', never '--' or '..'.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class HubSnapshot:
    """A repository's files in the local cache: the folder, the id, the commit it holds."""

    repo_id: str
    folder: Path
    commit: str | None
    cache: Path
    offline: bool


def looks_like_hub_id(spec: str) -> bool:
    """``owner/name`` that could be a Hub model id (a local path is checked before this is asked)."""
    return (
        bool(_HUB_ID.fullmatch(spec))
        and "--" not in spec
        and ".." not in spec
        and not spec.endswith((".pt", ".pth", ".bin", ".safetensors", ".json"))
    )


def hub_cache_dir() -> Path:
    """Where the Hugging Face cache is, by the environment as it is now (``huggingface_hub`` reads
    it once, at its import)."""
    env = os.environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(env[name]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE).expanduser()
    except ImportError:
        return Path(env.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "huggingface" / "hub"


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as it is now, or as ``huggingface_hub`` read it at import."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def resolve_hub_id(repo_id: str) -> HubSnapshot:
    """The cached folder holding ``repo_id``'s config and weights, downloading what is missing
    unless offline. Errors name the id and the cache searched."""
    try:
        import huggingface_hub
    except ImportError:
        raise EnvironmentUnavailable(
            f"{repo_id}: no such local file or folder; as a Hugging Face model id it needs the "
            f"huggingface_hub package: {INSTALL_HINT}"
        ) from None
    cache, offline = hub_cache_dir(), hub_offline()
    folder = _snapshot(huggingface_hub, repo_id, cache, offline, SAFETENSORS_PATTERNS)
    if not any(folder.glob("*.safetensors")):
        folder = _snapshot(huggingface_hub, repo_id, cache, offline, PICKLE_PATTERNS)
    commit = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None
    return HubSnapshot(repo_id, folder, commit, cache, offline)


def _snapshot(hub, repo_id: str, cache: Path, offline: bool, patterns: tuple[str, ...]) -> Path:
    errors = getattr(hub, "errors", None)
    gated = getattr(errors, "GatedRepoError", ())
    not_found = getattr(errors, "RepositoryNotFoundError", ())
    invalid = getattr(errors, "HFValidationError", ())
    try:
        return Path(
            hub.snapshot_download(
                repo_id, allow_patterns=list(patterns), cache_dir=str(cache), local_files_only=offline
            )
        )
    except gated as err:
        raise EnvironmentUnavailable(
            f"{repo_id}: a gated model on the Hugging Face Hub: accept its terms on the Hub and set HF_TOKEN "
            f"({_first_line(err)})"
        ) from None
    except not_found:
        raise InputError(
            f"{repo_id}: no such local file or folder, and no such model on the Hugging Face Hub "
            "(a private one needs HF_TOKEN)"
        ) from None
    except invalid as err:
        raise InputError(f"{repo_id}: not a Hugging Face model id ({_first_line(err)})") from None
    except Exception as err:  # noqa: BLE001 - not cached, the Hub unreachable, a partial snapshot: all mean "unavailable"
        where = "offline (HF_HUB_OFFLINE=1)" if offline else "the Hugging Face Hub could not provide it"
        raise EnvironmentUnavailable(
            f"{repo_id}: not in the Hugging Face cache {cache} and {where} ({type(err).__name__}); "
            "download it with network access (huggingface_hub's snapshot_download or `hf download`), "
            "set HF_HOME/HF_HUB_CACHE to the cache that holds it, or pass a local folder"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:200]
