"""The Jinja2 environment over the package's templates (``dissect/report/templates``).

HTML and SVG templates are autoescaped (labels come from the store's files); the environment is
built once per process, and each template is compiled once on first use (Jinja2's cache).
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def environment():
    """The Jinja2 environment (autoescaped .html and .svg, strict undefined)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("dissect.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "svg"]),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def render(name: str, **context) -> str:
    """Render template ``name`` (e.g. ``"layer.html"``) with ``context``."""
    return environment().get_template(name).render(**context)


__all__ = ["environment", "render"]
