"""Builds the metrics benchmark input from a Flickr8k caption file: for the first N images of
the training list, caption #0 is the candidate and captions #1-#4 are the references
(leave-one-out, as human-agreement studies do). Writes refs in MS-COCO caption format and the
candidates in MS-COCO results format.

usage: make_metrics_input.py FLICKR8K_DIR OUT_DIR [N]
"""
import json
import os
import sys

flickr, out = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
with open(os.path.join(flickr, "Flickr_8k.trainImages.txt")) as f:
    names = [line.strip() for line in f if line.strip()][:n]
captions = {}
with open(os.path.join(flickr, "Flickr8k.token.txt"), encoding="utf-8") as f:
    for line in f:
        key, caption = line.rstrip("\n").split("\t", 1)
        name, k = key.split("#")
        captions.setdefault(name, {})[int(k)] = caption
images, annotations, results = [], [], []
for index, name in enumerate(names, start=1):
    caps = captions[name]
    images.append({"id": index, "file_name": name})
    for k in range(1, 5):
        annotations.append({"id": len(annotations) + 1, "image_id": index, "caption": caps[k]})
    results.append({"image_id": index, "caption": caps[0]})
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "refs.json"), "w") as f:
    json.dump({"images": images, "annotations": annotations}, f)
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f)
print(f"{len(images)} images, {len(annotations)} references")
