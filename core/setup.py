"""Builds consent_core._native, the optional C accelerator (consent_core.native loads it or falls back).

Its sources are in csrc/ (native.h says what each file owns)."""

from pathlib import Path

from setuptools import Extension, setup

_SRC = Path(__file__).parent / "csrc"

# optional: a source install on a machine without a C compiler still works, in pure Python (slower);
# this project's own builds check that the accelerator is there (tests/test_wheels.py, tests/core).
# Paths relative to this file, as setuptools requires; -fvisibility=hidden: only PyInit__native is exported.
setup(
    ext_modules=[
        Extension(
            "consent_core._native",
            sorted(f"csrc/{p.name}" for p in _SRC.glob("*.c")),
            depends=sorted(f"csrc/{p.name}" for p in _SRC.glob("*.h")),
            extra_compile_args=["-O2", "-std=c11", "-fvisibility=hidden"],
            optional=True,
        ),
    ],
)
