#!/usr/bin/env python3
"""Summarises a benches/peers/run.sh run directory as Markdown: one table per workload with
every client's medians over its successful rounds, and rekafka's ratios to the peers.

    python3 benches/peers/summarise.py target/peers/run-DATE > summary.md
    python3 benches/peers/summarise.py --half-rate target/peers/run-DATE CLIENT

--half-rate prints half of CLIENT's median produce rate over the run's successful `produce`
rows so far (the rate the client reported itself; kcat reports none, so its records / wall
time), as a whole number of records/s: the rate of run.sh's latency-half workload. It exits 1
when there is no such row.

The container and poison workloads (rekafka and the Java client's Spring for Apache Kafka only)
write two modes per client and round (`container:consume` / `container:listen`,
`poison:plain` / `poison:poison`); each workload gets one table with a row per client and mode,
the container's CPU over the bare loop's and the poison flood's rate over plain consumption, per
client, as medians of the per-round pairs.
"""
import csv
import os
import re
import statistics
import sys

CLIENTS = ["rekafka", "librdkafka", "java", "franz"]
# Per workload, the medians the tables show (filled as they are printed; read by goals()).
STATS = {}
NAMES = {
    "rekafka": "rekafka (`perf`)",
    "librdkafka": "librdkafka 2.16 (kcat)",
    "java": "Java 4.4 (`*Performance`)",
    "franz": "franz-go",
}
TITLES = {
    "produce": "produce {n} × 100 B, 6 partitions, acks=all, no compression",
    "consume": "consume {n} × 100 B from 6 partitions",
    "produce10k": "produce {n} × 10 240 B, 6 partitions, acks=all, no compression",
    "lz4": "produce {n} × 100 B, lz4, {keys} distinct keys, 6 partitions, acks=all",
    "zstd": "produce {n} × 100 B, zstd, {keys} distinct keys, 6 partitions, acks=all",
    "produce600": "produce {n} × 100 B, 600 partitions, acks=all, no compression",
    "latency": "end-to-end latency, {n} × 100 B at {rate} rec/s, 6 partitions, acks=all",
    "latency-half": "end-to-end latency at half of each client's produce rate (of this run), 6 partitions, acks=all",
}
LATENCY_WORKLOADS = ("latency", "latency-half")
# ProducerPerformance has no key option: the keyed workloads run PeersProduce (kafka-clients).
KEYED_WORKLOADS = ("lz4", "zstd")
# The latency workload runs a driver per client instead of the perf tools.
LATENCY_NAMES = {
    "rekafka": "rekafka (`peers_latency`)",
    "librdkafka": "librdkafka 2.16 (Python binding)",
    "java": "Java 4.4 (kafka-clients)",
    "franz": "franz-go",
}
LATENCY_KEYS = ["rate", "p50_ms", "p99_ms", "p999_ms", "max_ms"]
# The container and poison workloads: results.tsv's workload is "BASE:MODE".
PAIR_WORKLOADS = {
    "container": "listener container vs a bare consumer loop, {n} × 100 B from 6 partitions, fresh group",
    "poison": "poison flood: {n} × 100 B (1 % poison → DLT, no retries) vs the same container with no poison, 6 partitions",
}
PAIR_MODES = {
    # listen-async (rekafka only): the same container with the handler as an async closure
    "container": [("consume", "bare loop"), ("listen", "container"), ("listen-async", "container, async handler")],
    "poison": [("plain", "plain (no poison)"), ("poison", "poison flood → DLT")],
}
PAIR_NAMES = {
    "rekafka": {"consume": "rekafka `Consumer` loop", "listen": "rekafka `ListenerContainer`",
                "listen-async": "rekafka `ListenerContainer`",
                "plain": "rekafka `ListenerContainer`", "poison": "rekafka `ListenerContainer`"},
    "java": {"consume": "Java `KafkaConsumer` loop", "listen": "Spring `ConcurrentMessageListenerContainer`",
             "plain": "Spring `ConcurrentMessageListenerContainer`", "poison": "Spring `ConcurrentMessageListenerContainer`"},
}
PAIR_CLIENT = {"rekafka": "rekafka", "java": "Spring for Apache Kafka"}


def latency_fields(text):
    """The latency drivers' line as a dict of floats, or {}."""
    m = re.findall(r"^records=.*p50_ms=.*$", text, re.M)
    if not m:
        return {}
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+|nan)", m[-1]) if k in LATENCY_KEYS}


def latency_table(mine, workload):
    print("| client | rec/s (asked) | rec/s (achieved) | p50 ms | p99 ms | p99.9 ms | max ms | CPU s (user+sys) | peak RSS MiB | broker CPU s | rounds ok |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    stats = {}
    for c in CLIENTS:
        rs = [r for r in mine if r["client"] == c]
        if not rs:
            continue
        ok = [r for r in rs if r["rc"] == "0"]
        asked = med([asked_rate(r) for r in rs])
        fields = []
        for r in ok:
            try:
                fields.append(latency_fields(open(r["log"] + ".out").read()))
            except OSError:
                fields.append({})
        s = {k: med([f.get(k) for f in fields]) for k in LATENCY_KEYS}
        s["cpu"] = med([float(r["user_s"]) + float(r["sys_s"]) for r in ok])
        s["rss"] = med([int(r["rss_kb"]) / 1024 for r in ok])
        s["broker"] = med([float(r["broker_cpu_s"]) for r in ok if r["broker_cpu_s"] != "NA"])
        stats[c] = s
        print(
            f"| {LATENCY_NAMES[c]} | {fmt(asked, ',.0f')} | {fmt(s['rate'], ',.0f')} | {fmt(s['p50_ms'], '.1f')} | {fmt(s['p99_ms'], '.1f')} "
            f"| {fmt(s['p999_ms'], '.1f')} | {fmt(s['max_ms'], '.1f')} | {fmt(s['cpu'], '.2f')} "
            f"| {fmt(s['rss'], '.1f')} | {fmt(s['broker'], '.2f')} | {len(ok)}/{len(rs)} |"
        )
    STATS[workload] = stats
    rk = stats.get("rekafka")
    peers = {c: s for c, s in stats.items() if c != "rekafka" and s["p99_ms"] is not None}
    if rk and rk["p99_ms"] is not None and peers:
        best = min(peers, key=lambda c: peers[c]["p99_ms"])
        print(
            f"\nrekafka (medians): p99 {rk['p99_ms']:.1f} ms against the best peer's "
            f"{peers[best]['p99_ms']:.1f} ms ({LATENCY_NAMES[best]}), {rk['p99_ms'] / peers[best]['p99_ms']:.2f}×"
            + (" (each at its own rate: see the rec/s columns)." if workload == "latency-half" else ".")
        )


def asked_rate(row):
    """The rate a latency run was asked for, from its command line (-r RATE), or None."""
    try:
        m = re.search(r" -r (\d+) ", open(row["log"] + ".cmd").read())
    except OSError:
        return None
    return float(m.group(1)) if m else None


def self_rate(client, workload, text):
    """The rate the client printed itself, records/s, or None."""
    m = re.findall(r"rec_per_s=([\d.]+)", text)
    if m:  # rekafka, franz-go, Java's PeersProduce
        return float(m[-1])
    if client in ("rekafka", "franz"):
        return None
    if client == "java" and workload != "consume":
        m = re.findall(r"\d+ records sent, ([\d.]+) records/sec", text)
        return float(m[-1]) if m else None
    if client == "java":
        # start.time, end.time, MB, MB.sec, nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms,
        # fetch.MB.sec, fetch.nMsg.sec: the fetch rate leaves out the group join
        lines = [ln for ln in text.splitlines() if ln.count(",") >= 9 and ln[:1].isdigit()]
        if lines:
            return float(lines[-1].split(",")[9])
    return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec):
    return "–" if x is None else format(x, spec)


def half_rate(run, client):
    """Half of CLIENT's median produce rate in RUN (own report, else records / wall), or None."""
    with open(os.path.join(run, "results.tsv")) as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t")
                if r["workload"] == "produce" and r["client"] == client and r["rc"] == "0"]
    rates = []
    for r in rows:
        try:
            own = self_rate(client, "produce", open(r["log"] + ".out").read())
        except OSError:
            own = None
        if own is None and float(r["wall_s"]) > 0:
            own = int(r["records"]) / float(r["wall_s"])
        rates.append(own)
    m = med(rates)
    return None if m is None else max(1, int(m / 2))


def pair_table(rows, base):
    """The container or poison workload's table: per client and mode, then the per-client ratio
    (container / loop CPU; poison / plain rate, from the first record), medians of the rounds'
    pairs (both modes of a round successful)."""
    modes = PAIR_MODES[base]
    (m0, _), (m1, _) = modes[0], modes[1]
    extra = {}  # further modes' ratios to the first, per client (the async container)
    print("| client | mode | rec/s (from the first record) | rec/s (wall) | wall s | CPU s (user+sys) | peak RSS MiB | broker CPU s | rounds ok |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    ratios, low_cpu = {}, []
    for c in CLIENTS:
        by_mode = {m: [r for r in rows if r["client"] == c and r["workload"] == f"{base}:{m}"] for m, _ in modes}
        if not any(by_mode.values()):
            continue
        per = {}
        for i, (m, label) in enumerate(modes):
            rs = by_mode[m]
            if i >= 2 and not rs:
                continue
            ok = [r for r in rs if r["rc"] == "0"]
            own = {}
            for r in ok:
                try:
                    own[r["round"]] = self_rate(c, base, open(r["log"] + ".out").read())
                except OSError:
                    own[r["round"]] = None
            cpu = {r["round"]: float(r["user_s"]) + float(r["sys_s"]) for r in ok}
            per[m] = {"own": own, "cpu": cpu}
            print(
                f"| {PAIR_NAMES.get(c, {}).get(m, c)} | {label} | {fmt(med(list(own.values())), ',.0f')} "
                f"| {fmt(med([int(r['records']) / float(r['wall_s']) for r in ok if float(r['wall_s']) > 0]), ',.0f')} "
                f"| {fmt(med([float(r['wall_s']) for r in ok]), '.2f')} | {fmt(med(list(cpu.values())), '.2f')} "
                f"| {fmt(med([int(r['rss_kb']) / 1024 for r in ok]), '.1f')} "
                f"| {fmt(med([float(r['broker_cpu_s']) for r in ok if r['broker_cpu_s'] != 'NA']), '.2f')} | {len(ok)}/{len(rs)} |"
            )
        key = "cpu" if base == "container" else "own"
        a, b = per[m0][key], per[m1][key]
        if base == "container" and any(v < 0.1 for v in list(a.values()) + list(b.values())):
            low_cpu.append(c)
        pairs = [b[k] / a[k] for k in a if k in b and a[k] and b[k] is not None]
        ratios[c] = (med(pairs), min(pairs) if pairs else None, max(pairs) if pairs else None, len(pairs))
        for m, label in modes[2:]:
            if m in per:
                x = per[m][key]
                more = [x[k] / a[k] for k in a if k in x and a[k] and x[k] is not None]
                extra.setdefault(c, []).append((label, med(more), len(more)))
    print()
    STATS[base] = ratios
    what = "container / bare loop CPU" if base == "container" else "poison flood / plain rate (from the first record)"
    goal = "goal ≤ 1.10" if base == "container" else "goal ≥ 0.50"
    parts = []
    for c, (m, lo, hi, k) in ratios.items():
        if m is None:
            parts.append(f"{PAIR_CLIENT.get(c, c)}: –")
        else:
            spread = f", {lo:.2f}–{hi:.2f}" if k > 1 else ""
            parts.append(f"{PAIR_CLIENT.get(c, c)} **{m:.2f}×** ({k} round{'s' if k != 1 else ''}{spread})")
    if parts:
        # /usr/bin/time counts CPU in 0.01 s steps: below 0.1 s a ratio is coarse
        note = (f" (CPU below 0.1 s for {', '.join(low_cpu)}: /usr/bin/time counts 0.01 s steps, so the ratio is coarse;"
                " more RECORDS)") if low_cpu else ""
        print(f"{what}, median of the rounds' pairs ({goal} for rekafka): {'; '.join(parts)}{note}.\n")
    for c, more in extra.items():
        for label, m, k in more:
            if m is not None:
                print(f"{PAIR_CLIENT.get(c, c)}, {label}: **{m:.2f}×** the bare loop's CPU ({k} round{'s' if k != 1 else ''}).\n")


def main():
    if sys.argv[1] == "--half-rate":
        rate = half_rate(sys.argv[2], sys.argv[3])
        if rate is None:
            sys.exit(1)
        print(rate)
        return
    run = sys.argv[1]
    with open(os.path.join(run, "results.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    machine = open(os.path.join(run, "machine.txt")).read().strip()
    print("```\n" + machine + "\n```\n")
    workloads = []
    for r in rows:
        base = r["workload"].split(":")[0]
        if base not in workloads:
            workloads.append(base)
    for w in workloads:
        if w in PAIR_WORKLOADS:
            mine = [r for r in rows if r["workload"].split(":")[0] == w]
            n = f"{int(mine[0]['records']):,}".replace(",", " ")
            print(f"### {PAIR_WORKLOADS[w].format(n=n)}\n")
            pair_table(mine, w)
            continue
        mine = [r for r in rows if r["workload"] == w]
        n = int(mine[0]["records"])
        rate = re.search(r"latency: (\d+) rec/s", machine)
        rate = f"{int(rate.group(1)):,}".replace(",", " ") if rate else "a fixed rate of"
        keys = re.search(r"keys: (\d+)", machine)
        keys = f"{int(keys.group(1)):,}".replace(",", " ") if keys else "K"
        print(f"### {TITLES.get(w, w).format(n=f'{n:,}'.replace(',', ' '), rate=rate, keys=keys)}\n")
        if w in LATENCY_WORKLOADS:
            latency_table(mine, w)
            print()
            continue
        print("| client | rec/s (wall) | rec/s (own report) | wall s | CPU s (user+sys) | peak RSS MiB | broker CPU s | rounds ok |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        stats = {}
        for c in CLIENTS:
            rs = [r for r in mine if r["client"] == c]
            if not rs:
                continue
            ok = [r for r in rs if r["rc"] == "0"]
            own = []
            for r in ok:
                try:
                    own.append(self_rate(c, w, open(r["log"] + ".out").read()))
                except OSError:
                    own.append(None)
            s = {
                "rate": med([int(r["records"]) / float(r["wall_s"]) for r in ok if float(r["wall_s"]) > 0]),
                "own": med(own),
                "wall": med([float(r["wall_s"]) for r in ok]),
                "cpu": med([float(r["user_s"]) + float(r["sys_s"]) for r in ok]),
                "rss": med([int(r["rss_kb"]) / 1024 for r in ok]),
                "broker": med([float(r["broker_cpu_s"]) for r in ok if r["broker_cpu_s"] != "NA"]),
            }
            stats[c] = s
            name = "Java 4.4 (kafka-clients `PeersProduce`)" if c == "java" and w in KEYED_WORKLOADS else NAMES[c]
            print(
                f"| {name} | {fmt(s['rate'], ',.0f')} | {fmt(s['own'], ',.0f')} | {fmt(s['wall'], '.2f')} "
                f"| {fmt(s['cpu'], '.2f')} | {fmt(s['rss'], '.1f')} | {fmt(s['broker'], '.2f')} | {len(ok)}/{len(rs)} |"
            )
        STATS[w] = stats
        rk = stats.get("rekafka")
        peers = {c: s for c, s in stats.items() if c != "rekafka" and s["rate"] is not None}
        if rk and rk["rate"] is not None and peers:
            best = max(peers, key=lambda c: peers[c]["rate"])
            parts = [f"rate {rk['rate'] / peers[best]['rate']:.2f}× the fastest peer ({NAMES[best]})"]
            for c in ("librdkafka", "java", "franz"):
                # /usr/bin/time counts CPU in 0.01 s steps: below 0.05 s a ratio says nothing
                if c in peers and peers[c]["cpu"] and min(rk["cpu"], peers[c]["cpu"]) >= 0.05:
                    parts.append(f"CPU {rk['cpu'] / peers[c]['cpu']:.2g}× {c}'s")
            if "librdkafka" in peers and peers["librdkafka"]["rss"]:
                parts.append(f"RSS {rk['rss'] / peers['librdkafka']['rss']:.2f}× librdkafka's")
            print(f"\nrekafka (medians, wall rate): {'; '.join(parts)}.")
        print()
    goals()


def goals():
    """Issue 21's goals against this run's medians: one row per goal and workload it applies to."""
    rows = []

    def ratio(a, b):
        return None if a is None or not b else a / b

    def row(goal, target, value, ok_if, how):
        met = "–" if value is None else ("met" if ok_if(value) else "**not met**")
        rows.append(f"| {goal} | {target} | {fmt(value, '.2f')}{'' if value is None else '×'} | {met} | {how} |")

    def peers_of(w, key):
        return {c: s for c, s in STATS.get(w, {}).items() if c != "rekafka" and s.get(key) is not None}

    for w, what in (("produce", "produce at the defaults"), ("consume", "consume")):
        st = STATS.get(w, {})
        rk = st.get("rekafka")
        if not rk:
            continue
        peers = peers_of(w, "rate")
        if peers:
            best = max(peers, key=lambda c: peers[c]["rate"])
            row(f"{what}: rate", "≥ 1.0× the fastest peer", ratio(rk["rate"], peers[best]["rate"]),
                lambda v: v >= 1.0, f"wall rate against {best}'s")
        if w == "produce":
            for c, limit in (("librdkafka", 0.5), ("java", 0.3)):
                if c in peers:
                    row(f"{what}: CPU", f"≤ {limit}× {c}'s", ratio(rk["cpu"], peers[c]["cpu"]),
                        lambda v, limit=limit: v <= limit, "CPU-s (user+sys)")
        else:
            cpus = peers_of(w, "cpu")
            if cpus:
                least = min(cpus, key=lambda c: cpus[c]["cpu"])
                row(f"{what}: CPU", "≤ 0.5× the best peer's", ratio(rk["cpu"], cpus[least]["cpu"]),
                    lambda v: v <= 0.5, f"against the peer with the least CPU ({least})")
    for w in ("produce", "consume", "produce10k", "lz4", "zstd", "produce600"):
        rk = STATS.get(w, {}).get("rekafka")
        lib = STATS.get(w, {}).get("librdkafka")
        if rk and lib:
            row(f"memory ({w})", "peak RSS ≤ 0.5× librdkafka's", ratio(rk["rss"], lib["rss"]),
                lambda v: v <= 0.5, "peak RSS")
    lat = STATS.get("latency", {})
    if lat.get("rekafka") and lat["rekafka"].get("p99_ms") is not None:
        peers = {c: s for c, s in lat.items() if c != "rekafka" and s.get("p99_ms") is not None}
        if peers:
            best = min(peers, key=lambda c: peers[c]["p99_ms"])
            row("latency: p99 at the fixed rate", "≤ 1.0× the best peer's",
                ratio(lat["rekafka"]["p99_ms"], peers[best]["p99_ms"]), lambda v: v <= 1.0,
                f"against {best}'s {peers[best]['p99_ms']:.1f} ms")
    for base, goal, ok_if, how in (
        ("poison", "≥ 0.50", lambda v: v >= 0.5, "poison flood rate / plain rate"),
        ("container", "≤ 1.10", lambda v: v <= 1.1, "container CPU / bare loop CPU"),
    ):
        m = STATS.get(base, {}).get("rekafka")
        if m:
            row(f"{base}", goal, m[0], ok_if, how)
    if rows:
        print("### Issue 21's goals in this run (rekafka's medians against the peers')\n")
        print("| goal | target | rekafka | verdict | measured as |")
        print("|---|---|---:|---|---|")
        print("\n".join(rows))
        print()


if __name__ == "__main__":
    main()
