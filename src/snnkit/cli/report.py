"""``snn-report``: not yet available in this version (its issue is in progress)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="snn-report", description="Not yet available: its issue is in progress.")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.parse_args(argv)
    print("snn-report: not yet available in this version", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
