"""The table of compare_peers.sh: medians over rounds of every measurement, and the ratios."""
import collections
import csv
import statistics
import sys


def main():
    rows = collections.defaultdict(list)
    with open(sys.argv[1]) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            rows[(r["program"], r["precision"], r["measure"])].append(r)
    rounds = max(len(v) for v in rows.values())

    def seconds(program, precision, measure):
        return statistics.median(float(r["seconds"]) for r in rows[(program, precision, measure)])

    def peak_gib(program, precision):
        values = [float(r["peak_rss_kib"]) for r in rows[(program, precision, "whole process")]]
        return max(values) / 1024 ** 2

    print(f"Median of {rounds} interleaved round(s); peak RSS is the largest of the rounds (GiB).\n")
    print("| run | singleinsert | peer | peer / singleinsert |")
    print("|---|---|---|---|")
    for si, peer in (("fp32 --half-weights", "f32"), ("fp32", "f32"), ("bf16", "f16")):
        s, p = seconds("singleinsert", si, "whole process"), seconds("stable-diffusion.cpp", peer, "whole process")
        ms, mp = peak_gib("singleinsert", si), peak_gib("stable-diffusion.cpp", peer)
        print(f"| whole process, {si} vs stable-diffusion.cpp {peer} | {s:.1f} s, peak RSS {ms:.2f} GiB | "
              f"{p:.1f} s, {mp:.2f} GiB | {p / s:.2f}x time, {mp / ms:.2f}x memory |")
    for si in ("fp32", "bf16"):
        s, p = seconds("singleinsert", si, "generation only"), seconds("diffusers", si, "generation only")
        print(f"| generation only, {si} vs diffusers {si} | {s:.1f} s | {p:.1f} s | {p / s:.2f}x |")


if __name__ == "__main__":
    main()
