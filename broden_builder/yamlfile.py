"""Reading a YAML file a user wrote (a recipe, a source entry, dissect's --config settings): one
line per problem, naming the file, and a key given twice in one mapping refused."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import yaml


class _DuplicateKey(yaml.YAMLError):
    """A key given twice in one YAML mapping (one line, no YAML source excerpt)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping. PyYAML keeps the last value
    silently, so ``size: 224`` followed later by ``size: 64`` would build at 64 with no word;
    a recipe must mean one thing: a repeated key is an error naming the key and both lines."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' merges; its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(f"key {key!r} given twice in one mapping (lines {seen[key]} and {line})")
                seen[key] = line
            except TypeError:  # an unhashable key: construct_mapping reports it
                continue
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(e: Exception) -> str:
    """One line for a YAML error: the problem and its line and column (1-based), without PyYAML's
    multi-line excerpt of the text."""
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    if problem is None:
        return " ".join(str(e).split())
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{' '.join(str(problem).split())}"


def read_yaml(path: Union[str, Path], error: type = ValueError, what: str = "file") -> Any:
    """Parse a YAML file; a missing file, invalid YAML or a key given twice in one mapping raises
    ``error`` naming the file."""
    path = Path(path)
    try:
        return yaml.load(path.read_text("utf-8"), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a {what}") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e})") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: invalid YAML ({_yaml_problem(e)})") from None
    except RecursionError:  # the parser recurses per nesting level: thousands of [[[...]]] exhaust the stack
        raise error(f"{path}: nested too deeply (thousands of levels) to be a {what}") from None


__all__ = ["read_yaml"]
