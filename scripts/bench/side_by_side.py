#!/usr/bin/env python3
"""The side-by-side table of a scripts/bench/cuda.sh run: each `caption train --benchmark` log in
OUT_DIR next to its PyTorch twin's (the log of the same configuration whose name ends in
`_torch`), as images/s and the ratio burn / PyTorch, with burn's warm-up step (cold start).

usage: side_by_side.py OUT_DIR
"""
import json
import pathlib
import sys

# Log-name prefixes of the benchmarked configurations; a burn log is PREFIX[_VARIANT[_warm]]_*.log
# or PREFIX_cuda.log, its twin PREFIX_torch.log.
CONFIGS = ["shapes_bench", "flickr_att_bench", "flickr_att_b128", "flickr_tfm_bench"]


def report(path):
    """The last JSON object a benchmark log printed, or None."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def main():
    out = pathlib.Path(sys.argv[1])
    print(f"{'run':<28} {'burn img/s':>11} {'warm-up s':>10} {'torch img/s':>12} {'burn/torch':>10}")
    for config in CONFIGS:
        twin = report(out / f"{config}_torch.log")
        for log in sorted(out.glob(f"{config}_*.log")):
            if log.stem.endswith("_torch"):
                continue
            burn = report(log)
            if burn is None or "images_per_s" not in burn:
                print(f"{log.stem:<28} {'failed':>11}")
                continue
            torch_rate = twin["images_per_s"] if twin else float("nan")
            print(
                f"{log.stem:<28} {burn['images_per_s']:>11.1f} {burn.get('warmup_s', float('nan')):>10.2f} "
                f"{torch_rate:>12.1f} {burn['images_per_s'] / torch_rate:>10.3f}"
            )


if __name__ == "__main__":
    main()
