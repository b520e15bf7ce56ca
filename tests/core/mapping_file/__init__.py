"""Tests of consent_core.mapping_file, one module per module: reader, editor, saver."""
