"""Manual sources: instructions for datasets that require registration (e.g. ADE20K)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import SourceMissingError


def manual_instructions(name: str, site_url: str, layout: Union[str, Sequence[str]],
                        path: Optional[Union[str, Path]] = None, *, notes: str = "",
                        archive: Optional[str] = None) -> str:
    """How to obtain a registration-only source by hand.

    ``layout`` lists the paths (relative to ``path``) that must exist after unpacking;
    ``archive`` names the file the site offers, when known; ``notes`` adds free text.
    """
    where = Path(path).expanduser().resolve() if path is not None else None
    items = [layout] if isinstance(layout, str) else list(layout)
    lines = [f"{name} cannot be downloaded automatically: its site requires registration.",
             f"  1. Register and download it from {site_url}" + (f" (file: {archive})" if archive else "") + "."]
    if where is not None:
        lines.append(f"  2. Unpack it so that these paths exist under {where}:")
    else:
        lines.append("  2. Unpack it and set the source's `path` in the recipe so that these paths exist under it:")
    lines += [f"       {where / p if where is not None else p}" for p in items]
    lines.append("  3. Run the command again (`path` in the recipe may point at any folder with this layout).")
    if notes:
        lines += ["  " + n for n in notes.splitlines()]
    return "\n".join(lines)


def require_manual(name: str, site_url: str, layout: Union[str, Sequence[str]],
                   path: Optional[Union[str, Path]], **kwargs) -> Path:
    """Return ``path`` if every ``layout`` entry exists under it, else raise SourceMissingError with instructions."""
    items = [layout] if isinstance(layout, str) else list(layout)
    if path is not None:
        root = Path(path).expanduser()
        missing = [p for p in items if not (root / p).exists()]
        if not missing:
            return root
        head = f"{name}: missing under {root}: {', '.join(missing)}\n"
    else:
        head = f"{name}: no `path` given in the recipe\n"
    raise SourceMissingError(head + manual_instructions(name, site_url, items, path, **kwargs))
