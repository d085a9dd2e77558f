"""Offline instructions: exactly which file to put where, for each missing resource."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from .registry import Resource
from .transfer import mirror_from_env, mirror_url


def offline_instructions(resources: Sequence[Resource], dest_dir: Union[str, Path], *,
                         mirror: Optional[str] = None, source: str = "") -> str:
    """A block of text, one entry per resource: url, filename, destination path, size and sha256.

    Sizes and checksums not yet known are shown as ``unknown``. Verification commands use
    ``sha256sum``.
    """
    lines = []
    head = f"source {source}: " if source else ""
    lines.append(f"{head}put {'this file' if len(resources) == 1 else f'these {len(resources)} files'} "
                 f"into place (then run again):")
    m = mirror_from_env(mirror)
    for r in resources:
        dest = r.path_in(Path(dest_dir).expanduser().resolve())
        lines.append(f"  url:         {r.url}")
        if m:
            lines.append(f"  mirror url:  {mirror_url(r.url, m)}")
        lines.append(f"  filename:    {r.filename}")
        lines.append(f"  destination: {dest}")
        lines.append(f"  size:        {r.size if r.size is not None else 'unknown'}" + (" bytes" if r.size is not None else ""))
        lines.append(f"  sha256:      {r.sha256 or 'unknown'}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
