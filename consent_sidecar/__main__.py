"""`python -m sidecar`: the same command line as the `consent-sidecar` console script."""

from consent_sidecar.cli import main

if __name__ == "__main__":
    main()
