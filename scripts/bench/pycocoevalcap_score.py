"""Times pycocoevalcap 1.2 on a refs/results pair, scorers run one by one as
COCOEvalCap.evaluate runs them (SPICE left out: it cannot download CoreNLP offline).
Prints one JSON object: scores and seconds per stage.

usage: pycocoevalcap_score.py REFS.json RESULTS.json [--no-meteor]
"""
import json
import sys
import time

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

refs_path, results_path = sys.argv[1], sys.argv[2]
with_meteor = "--no-meteor" not in sys.argv
start = time.perf_counter()
refs = json.load(open(refs_path))
results = json.load(open(results_path))
order = [image["id"] for image in refs["images"]]
gts = {i: [] for i in order}
for a in refs["annotations"]:
    gts[a["image_id"]].append({"caption": a["caption"]})
res = {r["image_id"]: [{"caption": r["caption"]}] for r in results}
gts = {i: gts[i] for i in order if i in res}
timings, scores = {}, {}
t = time.perf_counter()
tokenizer = PTBTokenizer()
gts = tokenizer.tokenize(gts)
res = tokenizer.tokenize(res)
timings["tokenize"] = time.perf_counter() - t
scorers = [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"])]
if with_meteor:
    scorers.append((Meteor(), ["METEOR"]))
scorers += [(Rouge(), ["ROUGE_L"]), (Cider(), ["CIDEr"])]
for scorer, names in scorers:
    t = time.perf_counter()
    score, _ = scorer.compute_score(gts, res)
    timings[scorer.method()] = time.perf_counter() - t
    for name, value in zip(names, score if isinstance(score, list) else [score]):
        scores[name] = value
timings["total"] = time.perf_counter() - start
print(json.dumps({"scores": scores, "seconds": timings}))
