#!/usr/bin/env python3
"""Per-kernel totals from a run with CUBECL_DEBUG_OPTION=profile and CUBECL_DEBUG_LOG=FILE
(cubecl 0.10 then writes to FILE one line per kernel execution, "| <duration> | <kernel name>"):
time, count and share per kernel, largest first.

usage: kernel_profile.py LOG [TOP]
"""
import re
import sys
from collections import defaultdict

UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
LINE = re.compile(r"^\|\s*([0-9.]+)(ns|µs|us|ms|s)\s*\|\s*(.+?)\s*$")


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    total = defaultdict(float)
    count = defaultdict(int)
    with open(path, encoding="utf-8", errors="replace") as log:
        for line in log:
            match = LINE.match(line.strip())
            if match:
                value, unit, name = match.groups()
                total[name] += float(value) * UNITS[unit]
                count[name] += 1
    if not total:
        print(f"{path}: no per-kernel lines (was CUBECL_DEBUG_OPTION=profile set?)")
        return
    grand = sum(total.values())
    print(f"{path}: {sum(count.values())} kernel executions, {grand * 1e3:.1f} ms of kernel time, {len(total)} kernels")
    print(f"{'ms':>10} {'share':>6} {'count':>8} {'us/call':>9}  kernel")
    for name, seconds in sorted(total.items(), key=lambda item: -item[1])[:top]:
        print(f"{seconds * 1e3:10.2f} {100 * seconds / grand:5.1f}% {count[name]:8d} {1e6 * seconds / count[name]:9.1f}  {name[:160]}")


if __name__ == "__main__":
    main()
