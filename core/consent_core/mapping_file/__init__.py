"""The mapping file on disk: read with positions, edited keeping comments, saved atomically.

`reader` turns the file's text into a validated `ConsentMapping` (every problem located
`file:line:column: path: message`; `walker` checks the node tree), `editor` turns a new
`ConsentMapping` into the smallest change to the file's own text (`rewrite` computes the
splices), `saver` replaces the file atomically and durably. This
package never decides anything, never watches, logs or audits, and never leaves a
half-written mapping file behind.
"""

from __future__ import annotations

from consent_core.mapping_file.editor import MappingDocument
from consent_core.mapping_file.reader import LoadedMapping, load_mapping, parse_mapping
from consent_core.mapping_file.saver import atomic_write

__all__ = [
    "LoadedMapping",
    "MappingDocument",
    "atomic_write",
    "load_mapping",
    "parse_mapping",
]
