#!/usr/bin/env python3
"""Tables for docs/methods.md: Beyond Inserting beside SingleInsert in the toy world
(scripts/beyond_inserting_comparison.sh's folders) and Prompt Tuning Inversion's edits
(`eval edits --json`).
  python3 scripts/beyond_inserting_tables.py out/methods [out/pti-edits/edits.json] [--solo 102,103,104]
Wall times are medians over the identities whose runs had the CPU alone: SingleInsert's and
textual inversion's over 100-102 (as in the methods table), the new variants' over --solo (all by
default)."""
import json
import os
import statistics
import sys

from toyworld_tables import cell  # mean ± standard error, as the other toy-world tables print it

VARIANTS = [("s2-sm", "SingleInsert (stage II)"), ("s2-attn", "SingleInsert + attention loss (I and II)"),
            ("ti", "textual inversion"), ("bi", "Beyond Inserting (both parts)"),
            ("bi-attn", "Beyond Inserting: attention loss only"), ("bi-kv", "Beyond Inserting: per-stage tokens only")]
PARENTS = {"s2-sm": "s1-fg-bg", "s2-attn": "s1-attn"}
EXPRESSIONS = ("smiling", "surprised")


def seconds(folder, key):
    total = 0.0
    for k in (key, PARENTS.get(key)):
        if k and os.path.exists(os.path.join(folder, k + ".seconds")):
            total += float(open(os.path.join(folder, k + ".seconds")).read())
    return total


SOLO = {"s2-sm": {"identity-100", "identity-101", "identity-102"}, "ti": {"identity-100", "identity-101", "identity-102"}}


def concept_rows(root):
    identities = sorted(d for d in os.listdir(root) if d.startswith("identity-"))
    complete = [i for i in identities
                if all(os.path.exists(os.path.join(root, i, k + ".eval.json")) for k, _ in VARIANTS)]
    rows = {k: [] for k, _ in VARIANTS}
    for i in complete:
        for k, _ in VARIANTS:
            e = json.load(open(os.path.join(root, i, k + ".eval.json")))
            expression = [p["success_rate"] for p in e["prompts"] if any(x in p["edits"] for x in EXPRESSIONS)]
            rows[k].append({
                "identity": i, "esr": e["esr"], "whole": e["closeness"]["whole"], "hidden": e["closeness"]["hidden"],
                "expression": statistics.fmean(expression), "view": e["novel_view"]["success"],
                "view_closeness": e["novel_view"]["closeness"]["whole"], "leakage": e["background_leakage"],
                "seconds": seconds(os.path.join(root, i), k)})
    return complete, rows


def print_concepts(root):
    complete, rows = concept_rows(root)
    if not complete:
        print("No identity has every variant scored yet.")
        return
    print(f"Identities: {', '.join(i.split('-')[1] for i in complete)} (mean ± standard error over {len(complete)})\n")
    print("| method | ESR | closeness | hidden part | expression edits | head turn drawn | closeness turned | "
          "background leakage | wall time (median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, name in VARIANTS:
        r = rows[k]
        cells = [cell([x[f] for x in r], 3) for f in ("esr", "whole", "hidden", "expression", "view",
                                                          "view_closeness", "leakage")]
        times = [x["seconds"] for x in r if x["identity"] in SOLO.get(k, {x["identity"] for x in r})]
        wall = f"{statistics.median(times):.0f} s" if times else ""
        print(f"| {name} | " + " | ".join(cells) + f" | {wall} |")
    print("\nPaired by identity (difference of means ± standard error of the differences):\n")
    print("| | ESR | closeness | hidden part | expression edits | head turn drawn |")
    print("|---|---|---|---|---|---|")
    for a, b in (("bi", "ti"), ("bi-attn", "ti"), ("bi-kv", "ti"), ("bi", "s2-sm"), ("s2-attn", "s2-sm")):
        name = dict(VARIANTS)
        cells = []
        for f in ("esr", "whole", "hidden", "expression", "view"):
            d = [x[f] - y[f] for x, y in zip(rows[a], rows[b])]
            cells.append(cell(d, 3))
        print(f"| {name[a]} − {name[b]} | " + " | ".join(cells) + " |")


def print_edits(path):
    record = json.load(open(path))
    print(f"\n{record['identities']} held-out identities from {record['first']}, {record['steps']} DDIM steps, guidance "
          f"{record['guidance']}, {record['inner_steps']} Adam iterations per step (mean ± standard error):\n")
    print("| edit | eta | edit shown | identity closeness | hidden part | mean abs. change outside the edit |")
    print("|---|---|---|---|---|---|")
    for e in record["summary"]:
        eta = "" if e["edit"] == "reconstruction" else f"{e['eta']:.1f}"
        cells = [f"{e[f]['mean']:.3f} ± {e[f]['se']:.3f}" for f in ("success", "closeness", "closeness_hidden",
                                                                   "outside_mae")]
        if e["edit"] == "reconstruction":
            cells[0] = ""
        print(f"| {e['edit']} | {eta} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--solo" in args:
        at = args.index("--solo")
        solo = {"identity-" + x for x in args[at + 1].split(",")}
        for key, _ in VARIANTS:
            SOLO.setdefault(key, solo)
        del args[at:at + 2]
    print_concepts(args[0])
    if len(args) > 1:
        print_edits(args[1])
