"""`--to hf://datasets/OWNER/NAME[@REVISION]`: upload a published folder to the Hugging Face Hub.

huggingface_hub is optional (`pip install 'peft-bench[hub]'`): without it, or without a token (HF_TOKEN, or
`hf auth login`), the command says so before anything is built. The repo is created if missing
(`create_repo(exist_ok=True)`), then the folder goes up as one `upload_folder` commit. HF_ENDPOINT points
huggingface_hub at another Hub (a mirror, a test server), as everywhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchInputError, error_text

PREFIX = "hf://"
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_TARGET_RE = re.compile(
    rf"hf://datasets/(?P<owner>{_NAME})/(?P<name>{_NAME})(?:@(?P<revision>[\w./-]{{1,200}}))?"
)
INSTALL_HINT = "pip install 'peft-bench[hub]'"


@dataclass(frozen=True)
class HubTarget:
    repo_id: str  # OWNER/NAME
    revision: str | None  # a branch; None: the repo's default branch

    def __str__(self) -> str:
        return f"{PREFIX}datasets/{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def is_hub(text: str) -> bool:
    return text.startswith(PREFIX)


def parse_target(text: str) -> HubTarget:
    match = _TARGET_RE.fullmatch(text)
    if match is None or ".." in text:
        raise BenchInputError(
            "not a Hub dataset: give hf://datasets/OWNER/NAME (or hf://datasets/OWNER/NAME@BRANCH); models "
            "and spaces take no dataset",
            source=text,
        )
    return HubTarget(f"{match['owner']}/{match['name']}", match["revision"])


def hub_token(target: HubTarget) -> str:
    """The token huggingface_hub would use, or a clear error when the library or the token is missing."""
    try:
        import huggingface_hub  # optional: only for --to hf://
    except ImportError:
        raise BenchInputError(
            f"uploading to the Hub needs huggingface_hub ({INSTALL_HINT})", source=str(target)
        ) from None
    token = huggingface_hub.get_token()
    if not token:
        raise BenchInputError(
            "no Hugging Face token: set HF_TOKEN or log in (`hf auth login`) with a token that can write there",
            source=str(target),
        )
    return token


def upload(folder: Path, target: HubTarget, token: str, *, ignore: tuple[str, ...] = (), message: str) -> str:
    """Create the dataset repo if missing and upload `folder` to it in one commit; the commit's URL."""
    from huggingface_hub import HfApi  # optional: only for --to hf://

    api = HfApi(token=token)
    try:
        api.create_repo(target.repo_id, repo_type="dataset", exist_ok=True)
        info = api.upload_folder(
            repo_id=target.repo_id,
            repo_type="dataset",
            folder_path=str(folder),
            revision=target.revision,
            commit_message=message,
            ignore_patterns=list(ignore),
        )
    except Exception as exc:  # HTTP errors, refused connections, a card the Hub rejects: no upload happened
        raise BenchInputError(f"upload failed: {error_text(exc)}", source=str(target)) from None
    return str(getattr(info, "commit_url", info))
