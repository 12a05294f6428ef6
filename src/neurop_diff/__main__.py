"""`python -m neurop_diff ...` is `neurop-diff ...` (the experiment runner starts each run this way)."""

from neurop_diff.cli import main

if __name__ == "__main__":
    main()
