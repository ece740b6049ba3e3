#!/usr/bin/env python3
"""Merges what scripts/gpu_run.sh measured into one figures.json: the stages with their status
and seconds, every bench run's JSON, the parity tests' counts, and the performance targets
(docs/performance.md) with the measured value beside each. Standard library only."""
import argparse
import glob
import json
import os
import platform


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"unreadable": f"{os.path.basename(path)}: {e}"}


def scenario(bench, run, name):
    for row in bench.get(run, {}).get("scenarios", []):
        if row.get("scenario") == name:
            return row
    return None


def main():
    parser = argparse.ArgumentParser()
    for flag in ("--device", "--stages", "--scratch", "--out"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--budget", type=int, required=True)
    parser.add_argument("--exit-status", type=int, required=True)
    args = parser.parse_args()

    stages = []
    with open(args.stages) as f:
        for line in f:
            name, status, seconds, number = line.rstrip("\n").split("\t")
            stages.append({"stage": name, "number": int(number), "status": status, "seconds": float(seconds)})

    bench = {}
    for path in sorted(glob.glob(os.path.join(args.scratch, "bench_*.json"))):
        bench[os.path.basename(path)[len("bench_"):-len(".json")]] = read_json(path)

    tests = None
    report = os.path.join(args.scratch, "tests.json")
    if os.path.exists(report):
        data = read_json(report)
        failures = [f"{suite['name']}.{case['name']}" for suite in data.get("testsuites", [])
                    for case in suite.get("testsuite", []) if case.get("failures")]
        tests = {"tests": data.get("tests"), "failures": data.get("failures"), "errors": data.get("errors"),
                 "seconds": data.get("time"), "failed": failures}

    # The performance targets (512 px; meaningful on the GPU only).
    targets = []
    for dtype in ("fp16", "bf16"):
        run = f"short_{dtype}"
        sample = scenario(bench, run, "sample")
        train = scenario(bench, run, "train")
        stage2 = scenario(bench, run, "stage2_step")
        targets += [
            {"target": f"{dtype}: 512 px 50-step CFG image", "limit": "<= 400 ms",
             "measured_ms": sample and sample["median_ms"], "met": bool(sample and sample["median_ms"] <= 400)},
            {"target": f"{dtype}: stage I + stage II, paper schedule", "limit": "<= 12000 ms",
             "measured_ms": train and train["median_ms"], "met": bool(train and train["median_ms"] <= 12000)},
            {"target": f"{dtype}: stage II peak memory", "limit": "< 10240 MiB",
             "measured_mib": stage2 and stage2["peak_memory_mb"],
             "met": bool(stage2 and stage2["peak_memory_mb"] < 10240)},
        ]

    figures = {
        "script": "scripts/gpu_run.sh",
        "device": args.device,
        "budget_seconds": args.budget,
        "exit_status": args.exit_status,
        "host": {"machine": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "stages": stages,
        "tests": tests,
        "bench": bench,
        "targets": targets if args.device == "cuda" else "not applicable: a CPU dry run on a tiny configuration",
    }
    tmp = args.out + ".partial"
    with open(tmp, "w") as f:
        json.dump(figures, f, indent=2)
        f.write("\n")
    os.replace(tmp, args.out)
    for t in targets if args.device == "cuda" else []:
        measured = t.get("measured_ms", t.get("measured_mib"))
        print(f"target {t['target']}: {t['limit']}, measured {measured}: {'met' if t['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
