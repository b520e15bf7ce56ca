"""Generated code for proto package consent.v1; regenerate with `make proto`, never edit."""
