"""Kernel durations from ncu, per launch plan: reads `kernel_probe.py --once`'s output with ncu's
CSV of gpu__time_duration.sum interleaved (ncu --csv writes its rows after the program's), and
prints the median and least duration of each plan's launches (a kernel's launches fall into two
groups some 10 us apart, so the least compares too), and the median warp instructions executed
where smsp__inst_executed.sum was also collected (a count: it does not vary between launches).

    ncu --csv --metrics gpu__time_duration.sum -k regex:'folio|sdpa|attention' \\
        python3 bench/kernel_probe.py 131072,4096 --once > ncu.csv
    python3 bench/ncu_table.py ncu.csv
"""
import csv
import statistics
import sys


def main(path: str):
    labels, rows, insts = [], [], {}
    with open(path) as f:
        lines = f.read().splitlines()
    for line in lines:
        if line.startswith("LAUNCHES "):
            n, label = line.split(" ", 2)[1:]
            labels.append((int(n), label))
    header = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
    for r in csv.DictReader(lines[header:]):
        if r.get("Metric Name") == "gpu__time_duration.sum":
            rows.append((r["Kernel Name"], float(r["Metric Value"].replace(",", "")), r["Metric Unit"], r["ID"]))
        elif r.get("Metric Name") == "smsp__inst_executed.sum":
            insts[r["ID"]] = float(r["Metric Value"].replace(",", ""))
    # In launch order: each folio label owns one warm-up launch and then its n; the SDPA label owns
    # the run of other kernels that follows (MLX's SDPA may launch several per call).
    scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}
    i = 0
    for n, label in labels:
        if "SDPA" in label:
            j = i
            while j < len(rows) and "folio" not in rows[j][0]:
                j += 1
            run, i = rows[i:j], j
            k = len(run) // (n + 1)
            if not k:
                print(f"{label:60s} (no kernels profiled)")
                continue
            run = run[k:]
            us = [sum(v * scale[u] for _n, v, u, _id in run[c * k:(c + 1) * k]) for c in range(n)]
            names = sorted({r[0][:40] for r in run})
            got = []
        else:
            got, i = rows[i + 1:i + 1 + n], i + 1 + n
            us = [v * scale[u] for _k, v, u, _id in got]
            names = []
        counts = [insts[r[3]] for r in got if r[3] in insts]
        inst = f" {statistics.median(counts) / 1e6:.2f}M instr" if counts else ""
        print(f"{label:60s} {statistics.median(us):8.1f} us, least {min(us):.1f}{inst}  "
              f"({', '.join(f'{x:.1f}' for x in us)}) {' '.join(names)}")

if __name__ == "__main__":
    main(sys.argv[1])
