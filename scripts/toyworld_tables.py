#!/usr/bin/env python3
"""The tables of docs/toyworld.md from a scripts/toyworld_ablation.sh folder: per variant the mean
over identities +- its standard error of ESR, identity closeness (whole, named part, hidden part),
closeness on the floor-to-ceiling scale, background leakage and wall time; the floors and
ceilings; paired differences against the text floor; the head turns; the composition.
Standard library only.   python3 scripts/toyworld_tables.py OUT"""
import glob
import json
import math
import os
import sys

VARIANTS = [("s1-full", "I: full image"), ("s1-fg", "I: L_fg"), ("s1-fg-bg", "I: L_fg + L_bg"),
            ("s2-full", "II: full image"), ("s2-no-sm", "II: L_fg + L_bg"), ("s2-sm", "II: L_fg + L_bg + L_sm"),
            ("ti", "textual inversion"), ("ti-db", "textual inversion + DreamBooth-LoRA"),
            ("ci", "Cross Initialization"), ("s2-attn", "II + face-wise attention loss"),
            ("bi", "Beyond Inserting"), ("bi-attn", "Beyond Inserting: attention loss only"),
            ("bi-kv", "Beyond Inserting: per-stage tokens only")]
# Methods whose concept comes after another's: their wall time includes that one's.
PARENTS = {"s2-sm": "s1-fg-bg", "s2-no-sm": "s1-fg-bg", "s2-full": "s1-full", "ti-db": "ti", "s2-attn": "s1-attn"}
PARTS = ("whole", "named", "hidden")


def mean_se(values):
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan"), 0
    n = len(values)
    m = sum(values) / n
    se = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n) if n > 1 else float("nan")
    return m, se, n


def cell(values, digits=2):
    m, se, n = mean_se(values)
    if n == 0:
        return "-"
    return f"{m:.{digits}f} ± {se:.{digits}f}" if n > 1 else f"{m:.{digits}f}"


def load(path):
    with open(path) as f:
        return json.load(f)


def main():
    root = sys.argv[1]
    identities = sorted(glob.glob(os.path.join(root, "identity-*")))
    rows = {key: [] for key, _ in VARIANTS}
    floors = []
    composes = []
    for folder in identities:
        for key, _ in VARIANTS:
            path = os.path.join(folder, key + ".eval.json")
            if os.path.exists(path):
                record = load(path)
                seconds = os.path.join(folder, key + ".seconds")
                record["seconds"] = float(open(seconds).read()) if os.path.exists(seconds) else None
                parent = os.path.join(folder, PARENTS.get(key, "") + ".seconds")
                if key in PARENTS and record["seconds"] is not None and os.path.exists(parent):
                    record["total_seconds"] = record["seconds"] + float(open(parent).read())
                rows[key].append(record)
        floor_path = os.path.join(folder, "floors.json")
        if os.path.exists(floor_path):
            floors.append(load(floor_path)["floors"])
        compose_path = os.path.join(folder, "compose.json")
        if os.path.exists(compose_path):
            composes.append(load(compose_path))
            # Ceilings measured apart (eval compose --ceilings-only) for a compose.json made without them.
            ceilings_path = os.path.join(folder, "compose-ceilings.json")
            if os.path.exists(ceilings_path):
                composes[-1] = {**load(ceilings_path), **composes[-1]}

    n = max((len(v) for v in rows.values()), default=0)
    print(f"{len(identities)} identities ({n} with every variant scored)\n")
    print("| variant | ESR | closeness | named part | hidden part | floor-to-ceiling (whole) | "
          "floor-to-ceiling (hidden) | background leakage | wall time (with its stage I) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, name in VARIANTS:
        r = rows[key]
        if not r:
            continue
        ftc = [x.get("closeness_floor_to_ceiling", {}) for x in r]
        print(f"| {name} | {cell([x['esr'] for x in r], 3)} | "
              + " | ".join(cell([x["closeness"][p] for x in r]) for p in PARTS)
              + f" | {cell([f.get('whole') for f in ftc])} | {cell([f.get('hidden') for f in ftc])}"
              + f" | {cell([x['background_leakage'] for x in r], 3)} | {cell([x['seconds'] for x in r], 0)} s"
              + (f" ({cell([x['total_seconds'] for x in r if 'total_seconds' in x], 0)} s)" if key in PARENTS else "")
              + " |")
    for key, name in (("text", "(text floor: the named attributes in words)"), ("class_word", "(the class word alone)"),
                      ("vae_ceiling", "(VAE ceiling: the edited renders through the VAE)"),
                      ("overfit_ceiling", "(overfit ceiling: the UNet fine-tuned on the source, its caption)")):
        f = [x[key] for x in floors]
        esr = cell([x["success"] for x in f], 3) if key in ("text", "class_word", "vae_ceiling") else ""
        print(f"| {name} | {esr} | " + " | ".join(cell([x["closeness"][p] for x in f]) for p in PARTS) + " | | | | |")

    # Paired by identity: each stage II variant against the text floor.
    print("\nPaired by identity, concept minus text floor (mean ± standard error):\n")
    print("| variant | ESR | closeness | named part | hidden part |")
    print("|---|---|---|---|---|")
    for key, name in VARIANTS:
        pairs = [(x, x.get("floors", {}).get("text")) for x in rows[key]]
        pairs = [(x, t) for x, t in pairs if t]
        if not pairs:
            continue
        print(f"| {name} | {cell([x['esr'] - t['success'] for x, t in pairs], 3)} | "
              + " | ".join(cell([x["closeness"][p] - t["closeness"][p] for x, t in pairs]) for p in PARTS) + " |")

    # Which named attributes are drawn as the source's (read from the identity embedding).
    named = ("skin", "hair_colour", "hair_style", "eyes", "freckles")
    kept_rows = [(name, [x["named_attributes_kept"] for x in rows[key] if "named_attributes_kept" in x])
                 for key, name in VARIANTS]
    kept_rows += [(name, [x[key]["named_attributes_kept"] for x in floors if "named_attributes_kept" in x.get(key, {})])
                  for key, name in (("text", "(text floor)"), ("class_word", "(the class word alone)"),
                                    ("vae_ceiling", "(VAE ceiling)"), ("overfit_ceiling", "(overfit ceiling)"))]
    if any(k for _, k in kept_rows):
        print("\nNamed attributes read as the source's (share of generations):\n")
        print("| variant | identities | " + " | ".join(a.replace("_", " ") for a in named) + " |")
        print("|---|---|" + "---|" * len(named))
        for name, k in kept_rows:
            if k:
                print(f"| {name} | {len(k)} | " + " | ".join(cell([x[a] for x in k]) for a in named) + " |")

    # Head turns: the concept asked for views its source never showed.
    print("\nNovel views (turned left, turned right, in profile; the source is frontal):\n")
    print("| variant | view drawn as asked | closeness | hidden part |")
    print("|---|---|---|---|")
    for key, name in VARIANTS:
        v = [x["novel_view"] for x in rows[key] if "novel_view" in x]
        if v:
            print(f"| {name} | {cell([x['success'] for x in v], 3)} | {cell([x['closeness']['whole'] for x in v])} | "
                  f"{cell([x['closeness']['hidden'] for x in v])} |")
    t = [x["text_novel_view"] for x in floors if "text_novel_view" in x]
    if t:
        print(f"| (text floor) | {cell([x['success'] for x in t], 3)} | {cell([x['closeness']['whole'] for x in t])} | "
              f"{cell([x['closeness']['hidden'] for x in t])} |")

    # Head to head, identity by identity: SingleInsert as shipped against every other method.
    by_identity = {key: {r["concept"].split(os.sep)[-2]: r for r in rows[key]} for key, _ in VARIANTS}
    others = [(key, name) for key, name in VARIANTS if key in ("ti", "ti-db", "ci", "s2-attn", "bi", "bi-attn", "bi-kv")
              and by_identity[key]]
    if by_identity["s2-sm"] and others:
        print("\nHead to head, identity by identity: SingleInsert (II: L_fg + L_bg + L_sm) higher / equal / lower:\n")
        print("| against | identities | ESR | closeness | hidden part |")
        print("|---|---|---|---|---|")
        for key, name in others:
            pairs = [(by_identity["s2-sm"][i], r) for i, r in by_identity[key].items() if i in by_identity["s2-sm"]]

            def tally(get):
                a = [get(x) - get(y) for x, y in pairs]
                return f"{sum(d > 1e-9 for d in a)} / {sum(abs(d) <= 1e-9 for d in a)} / {sum(d < -1e-9 for d in a)}"
            print(f"| {name} | {len(pairs)} | {tally(lambda x: x['esr'])} | {tally(lambda x: x['closeness']['whole'])} | "
                  f"{tally(lambda x: x['closeness']['hidden'])} |")

    if composes:
        print("\nComposition (a face concept and a cup concept learned apart, in one prompt; recognised = "
              "nearer to its source than to each of 9 other identities in the same scene):\n")
        print("| subjects named by | success | both recognised | face recognised | cup recognised | edits obeyed |")
        print("|---|---|---|---|---|---|")
        for row, name in (("renders", "the wanted scenes, rendered"), ("vae_ceiling", "the same through the VAE"),
                          ("concepts", "the two concepts (II: L_fg + L_bg + L_sm)"), ("words", "words")):
            c = [x[row] for x in composes if row in x]
            if not c:
                continue
            print(f"| {name} | " + " | ".join(cell([x[k] for x in c], 3) for k in
                                               ("success", "both_recognised", "face_recognised", "cup_recognised",
                                                "edits_obeyed")) + " |")


if __name__ == "__main__":
    main()
