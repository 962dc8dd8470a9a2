"""Where a model named on the command line is: a local path, or a Hugging Face repo id in the local cache.

``resolve_model(spec, revision=..., cache_dir=...)`` accepts what people type:

- a model directory, an ``.onnx`` file, or a single weights file (``model.safetensors``, ``pytorch_model.bin``,
  any one ``*.safetensors``) with ``config.json`` and the tokenizer beside it: returned as it is;
- a Hugging Face cache folder of one repo (``.../hub/models--org--name``): its snapshot for ``revision``
  (default ``main``);
- a repo id (``org/name``): its snapshot in the local Hugging Face cache (``cache_dir``, else ``HF_HUB_CACHE`` /
  ``HF_HOME`` as ``huggingface_hub`` finds it), for ``revision`` (a branch, a tag or a commit).

Nothing is ever downloaded (``local_files_only``): the agent runs next to the weights the owner already has, and
a fingerprint of files fetched behind the owner's back would prove nothing about the model they hold. A repo
that is not in the cache is a clear error that says how to fetch it. ``huggingface_hub`` is imported only for
the last two forms.
"""

from __future__ import annotations

import re
from pathlib import Path

from owner.errors import CheckpointError

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
_CACHE_FOLDER = re.compile(r"models--(.+)")


def resolve_model(spec: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The local path of the model ``spec`` names (see the module docstring); ``CheckpointError`` otherwise."""
    path = Path(spec)
    if path.exists():
        folder = _CACHE_FOLDER.fullmatch(path.name) if path.is_dir() else None
        if folder is not None and (path / "snapshots").is_dir():
            repo_id = folder.group(1).replace("--", "/")
            return _snapshot(repo_id, revision, path.parent)
        if revision is not None:
            raise CheckpointError(f"{path}: --revision applies to a Hugging Face repo id or cache folder, not to "
                                  "a local directory or file")
        return path
    text = str(spec)
    if not _REPO_ID.fullmatch(text):
        raise CheckpointError(f"{text}: no such file or directory (nor a Hugging Face repo id)")
    return _snapshot(text, revision, Path(cache_dir) if cache_dir is not None else None, also_a_path=True)


def _snapshot(repo_id: str, revision: str | None, cache_dir: Path | None, *, also_a_path: bool = False) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    where = f" in {cache_dir}" if cache_dir is not None else " in the local Hugging Face cache"
    try:
        found = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
    except LocalEntryNotFoundError:
        rev = f" at revision {revision}" if revision else ""
        neither = "no such file or directory, and " if also_a_path else ""
        raise CheckpointError(
            f"{repo_id}{rev}: {neither}not found{where}; pawprint never downloads a model: fetch it first "
            f"(e.g. `huggingface-cli download {repo_id}{' --revision ' + revision if revision else ''}`)"
        ) from None
    except HFValidationError as e:
        raise CheckpointError(f"{repo_id}: not a valid Hugging Face repo id ({e})") from None
    if not isinstance(found, str):  # a dry run returns file infos; never asked for here
        raise CheckpointError(f"{repo_id}: the Hugging Face cache answered unexpectedly")
    return Path(found)
