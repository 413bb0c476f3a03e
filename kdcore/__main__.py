"""`python -m kdcore ...` is the `kdcore` command (so `torchrun -m kdcore run spec.json` works)."""

from kdcore.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
