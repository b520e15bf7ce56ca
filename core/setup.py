"""Builds consent_core._native, the optional C accelerator (consent_core.native loads it or falls back)."""

from setuptools import Extension, setup

# optional: a source install on a machine without a C compiler still works, in pure Python (slower);
# this project's own builds check that the accelerator is there (tests/test_wheels.py, tests/core).
setup(
    ext_modules=[
        Extension("consent_core._native", ["consent_core/_native.c"], extra_compile_args=["-O2", "-std=c11"],
                  optional=True),
    ],
)
