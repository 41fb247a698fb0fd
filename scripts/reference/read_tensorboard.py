"""Reads a run's TensorBoard directory with the official `tensorboard` package, to check that
what `caption-train`'s hand-written event writer (crates/train/src/tensorboard.rs) produces is
what TensorBoard itself sees.

usage: python read_tensorboard.py DIR
Prints one JSON object: {"scalars": {tag: [[step, value], ...]}, "text": {tag: [[step, "string"], ...]}},
each list in the order TensorBoard returns it (by step, all event files of DIR merged).
"""
import argparse
import json

from tensorboard.backend.event_processing.event_accumulator import (
    SCALARS,
    TENSORS,
    EventAccumulator,
)

p = argparse.ArgumentParser()
p.add_argument("dir")
a = p.parse_args()

# 0 = keep everything: by default TensorBoard samples long series down to a reservoir.
acc = EventAccumulator(a.dir, size_guidance={SCALARS: 0, TENSORS: 0})
acc.Reload()
tags = acc.Tags()

scalars = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in tags[SCALARS]}
# Text summaries come back as string tensors; anything else in TENSORS is not ours.
text = {
    tag: [[e.step, e.tensor_proto.string_val[0].decode("utf-8")] for e in acc.Tensors(tag)]
    for tag in tags[TENSORS]
    if acc.SummaryMetadata(tag).plugin_data.plugin_name == "text"
}
print(json.dumps({"scalars": scalars, "text": text}, ensure_ascii=False))
