"""Builds consent_core._native, the optional C accelerator (consent_core.native loads it or falls back)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("consent_core._native", ["consent_core/_native.c"], extra_compile_args=["-O2", "-std=c11"]),
    ],
)
