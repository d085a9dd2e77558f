"""The shared floor: what a tool built on Broden stores (the ``dissect`` package) may use of
broden_builder besides its public API (``BrodenStore``, ``BrodenDataset``, ...), under one name.

- atomic writes: :func:`atomic_write_bytes`, :func:`atomic_write_text` (a whole file or nothing,
  ``durable=True`` to fsync), :func:`fsync_dir`, :func:`sweep_temp_files` (debris of killed writers);
- locks: :func:`exclusive` (one writer per folder; :class:`LockedError` names the holder);
- paths: :func:`safe_component` (one path component, refused with :class:`UnsafePathError`);
- progress: :func:`progress` (tqdm.auto, quiet when asked), :func:`progress_to` (where progress
  lines go), :func:`note` (a one-line note: resume, checkpoint), :func:`add_verbosity_flags`,
  :func:`add_verbosity_to_subcommands` (-q/--quiet, -v/--verbose); words: :func:`count` ("3 units");
- CLI errors: :func:`run_command` (every error one line ``error: ...``, exit status), :func:`describe`,
  :class:`UsageError`; :class:`InputError`, the base of the errors reported as bad input;
- store checks: :func:`label_number_problems`; suggestions: :func:`did_you_mean`;
- a user's YAML file: :func:`read_yaml` (one-line errors naming the file, a repeated key refused);
- the label cache of a store's decoded planes: :class:`LabelCache`;
- a user's files: :func:`file_sha256` (their identity in provenance), :func:`import_user_file` (``file.py:function`` specs), :func:`missing_model_folder` (an ``hf:`` folder that is not there);
- images as the builder reads them: :func:`load_image` (the one image decoder), :func:`load_whole`
  (``im.load()`` refusing a truncated file), :func:`resize_image`
  (the original build's resize rule).

Everything else in broden_builder is its own business (tests/test_architecture.py checks that
dissect imports only the public API, this floor and the demo's build functions).
"""
from .cli_errors import UsageError, describe, run_command
from .errors import InputError
from .progress import add_verbosity_flags, add_verbosity_to_subcommands, note, progress, progress_to
from .store.format import load_whole
from .store.atomic import atomic_write_bytes, atomic_write_text, fsync_dir, sweep_temp_files
from .store.locking import LockedError, exclusive
from .store.paths import UnsafePathError, safe_component
from .store.validate import label_number_problems
from .resize import resize_image
from .sources.decode import load_image
from .store.label_cache import LabelCache
from .suggest import did_you_mean
from .words import count
from .userfiles import file_sha256, import_user_file, missing_model_folder
from .yamlfile import read_yaml

__all__ = ["InputError", "LabelCache", "LockedError", "load_image", "resize_image", "UnsafePathError", "UsageError", "add_verbosity_flags",
           "add_verbosity_to_subcommands", "atomic_write_bytes", "count", "note", "progress_to", "atomic_write_text", "describe", "did_you_mean",
           "exclusive", "file_sha256", "import_user_file", "missing_model_folder", "fsync_dir", "label_number_problems", "load_whole", "progress", "read_yaml", "run_command", "safe_component",
           "sweep_temp_files"]
