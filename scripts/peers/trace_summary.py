"""Self time per operator in a Chrome trace from PyTorch's profiler (LibTorch's RecordProfile or
torch.autograd.profiler.profile().export_chrome_trace), heaviest first.

    python3 trace_summary.py TRACE.json [--top 25]
"""
import argparse
import collections
import json


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("trace")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with open(args.trace) as f:
        events = [e for e in json.load(f) if e.get("ph") == "X"]
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[e.get("tid")].append(e)
    self_us = collections.Counter()
    calls = collections.Counter()
    total = 0.0
    for thread_events in by_thread.values():
        thread_events.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [end, name, child time]
        def close(entry):
            self_us[entry[1]] += entry[3] - entry[2]
        for e in thread_events:
            start, dur = float(e["ts"]), float(e["dur"])
            while stack and stack[-1][0] <= start:
                close(stack.pop())
            if stack:
                stack[-1][2] += dur
            else:
                total += dur
            stack.append([start + dur, e["name"], 0.0, dur])
            calls[e["name"]] += 1
        while stack:
            close(stack.pop())
    print(f"{'operator':40s} {'self ms':>10s} {'share':>6s} {'calls':>7s}")
    for name, us in self_us.most_common(args.top):
        print(f"{name[:40]:40s} {us / 1000:10.1f} {100 * us / total:5.1f}% {calls[name]:7d}")
    print(f"{'top-level total':40s} {total / 1000:10.1f}")


if __name__ == "__main__":
    main()
