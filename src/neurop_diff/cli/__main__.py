"""`python -m neurop_diff.cli ...` is `neurop-diff ...` (as `python -m neurop_diff`)."""

from neurop_diff.cli import main

if __name__ == "__main__":
    main()
