#!/usr/bin/python3
"""What a balancing policy can reach in the balancing scenario's model, and how much one run's
p99 moves with the draws. The model is the stub compilers' and the simulated agents' (bench/fleet.py
`balance`): four compilers of four JRuby-like slots, one at half speed, log-normal compile times,
10% of nodes in slow environments, agents every 30 s with splay, each run four light requests,
the catalog and the report, one after the other. Discrete events, no network, no LB cost, no
timing of this machine. Within a seed every policy gets the same arrivals and draws.

Policies:
- `nowait`: every request on a free full-speed slot at once (the report's no-wait floor, with
  this seed's draws).
- `clairvoyant`: each request where it will finish soonest, knowing the exact compile time of
  everything queued and of itself (greedy earliest finish; strong, though not optimal).
- `online`: each request where it is expected to finish soonest from what an LB can know: what
  each member holds and for how long, the mean work of a light request and of a catalog, and
  whether the node is in a slow environment (`online-first`: not on a node's first run).
- `least-latency`: crossbar's (lb/src/balance.rs `shortest_expected_delay`) with max_in_flight
  = slots and its averages at their long-run means (`least-latency-first`: node costs unknown on
  a node's first run).
- `crossbar`: crossbar's least-latency as implemented, with its estimators (decaying averages per
  member, node costs learnt from catalogs), which `least-latency` idealises; the gap between
  the two is what the estimators cost.
- `leastconn`: fewest in flight per slot, queued inside the member when its slots are busy.
- `leastconn-maxconn`: HAProxy's `leastconn` with `maxconn` = slots, as the benchmark configures
  it: among members with a free slot the one with the fewest in flight; with none free, the LB's
  queue, whose head goes to the first slot that frees, fast or slow.

    bench/oracle.py [LOAD] [SEEDS] [WARMUP_S]   # e.g. 0.8 20 30: p99 per policy and seed,
                                                # then medians and ratios to leastconn-maxconn
    bench/oracle.py LOAD bench [WARMUP_S]       # the benchmark's own draws (see `bench_runs`)"""
import heapq
import math
import random
import struct
import sys

from fleet import capacity


def runs_for(model, load, seconds, seed, warmup=0.0, interval=30.0):
    """The agents' runs: (start time, node is slow, measured, node has run before, the compile
    time drawn for its catalog, the node) in start order, at `load` of the
    compilers' capacity, each agent every `interval` with a random offset (splay)."""
    rng = random.Random(seed)
    agents = round(capacity(model) * load * interval)
    runs = []
    for index in range(agents):
        offset, slow = rng.uniform(0, interval), rng.random() < model["slow_share"]
        runs += agent_runs(model, index, offset, slow, lambda _: rng.gauss(0, 1), warmup + seconds, warmup, interval)
    runs.sort()
    return runs, agents


def agent_runs(model, index, offset, slow, normal_of, until, warmup, interval):
    """Agent `index`'s runs (as `runs_for` gives them) from `offset` every `interval` until
    `until`; run k's compile time from the standard normal `normal_of(k)`."""
    runs = []
    k = 0
    while offset + k * interval < until:
        start = offset + k * interval
        draw = model["median_s"] * math.exp(model["sigma"] * normal_of(k)) * (10 if slow else 1)
        runs.append((start, slow, start >= warmup, k > 0, draw, index))
        k += 1
    return runs


MASK = (1 << 64) - 1


def siphash13(data):
    """SipHash-1-3 with zero keys: what Rust's `DefaultHasher::new()` computes (crates/sim
    `stable_hash`), over the bytes Rust's `Hash` writes."""
    def rotl(x, b):
        return ((x << b) | (x >> (64 - b))) & MASK
    v = [0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573]

    def sip_round():
        v[0] = (v[0] + v[1]) & MASK; v[1] = rotl(v[1], 13) ^ v[0]; v[0] = rotl(v[0], 32)
        v[2] = (v[2] + v[3]) & MASK; v[3] = rotl(v[3], 16) ^ v[2]
        v[0] = (v[0] + v[3]) & MASK; v[3] = rotl(v[3], 21) ^ v[0]
        v[2] = (v[2] + v[1]) & MASK; v[1] = rotl(v[1], 17) ^ v[2]; v[2] = rotl(v[2], 32)

    def absorb(m):
        v[3] ^= m
        sip_round()
        v[0] ^= m
    end = len(data) - len(data) % 8
    for i in range(0, end, 8):
        absorb(struct.unpack_from("<Q", data, i)[0])
    absorb(int.from_bytes(data[end:], "little") | (len(data) & 0xFF) << 56)
    v[2] ^= 0xFF
    for _ in range(3):
        sip_round()
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def rust_str(text):
    """The bytes Rust's `Hash for str` writes: the UTF-8, then 0xff."""
    return text.encode() + b"\xff"


def bench_runs(model, load, seconds, warmup=0.0, interval=30.0):
    """The runs the benchmark itself gives every LB (common random numbers), as `runs_for`
    returns them: agents `agent00000.sim.example.com` on, each first at its splay (crates/sim
    `splay_fraction`), its environment slow or not (`slow_environment`), each run's compile time
    from its certname and number (`normal_for`)."""
    agents = max(8, round(load * capacity(model) * interval))
    unit = lambda half: (half + 0.5) / 4_294_967_296.0  # noqa: E731

    def normal_of(name):
        def normal(k):
            bits = siphash13(rust_str(name) + struct.pack("<Q", k))
            return math.sqrt(-2 * math.log(unit(bits >> 32))) * math.cos(2 * math.pi * unit(bits & 0xFFFFFFFF))
        return normal
    runs = []
    for index in range(agents):
        name = f"agent{index:05}.sim.example.com"
        offset = interval * (siphash13(rust_str("splay") + rust_str(name)) >> 11) / (1 << 53)
        slow = siphash13(rust_str(name)) % 10_000 / 10_000 < model["slow_share"]
        runs += agent_runs(model, index, offset, slow, normal_of(name), warmup + seconds, warmup, interval)
    runs.sort()
    return runs, agents


def simulate(model, runs, policy):
    """Each run: four light requests, the catalog, one light request (the report), one after
    the other. Returns the measured runs' durations."""
    speeds = model["speeds"]
    slots = [[0.0] * model["slots"] for _ in speeds]  # when each slot is next free
    in_flight = [[] for _ in speeds]  # finish times of requests on each member (leastconn)
    placed = [[] for _ in speeds]  # (start, finish, expected work) on each member (online)
    mean_catalog = model["median_s"] * math.exp(model["sigma"] ** 2 / 2)
    # (when, run, step, the run's start, whether the LB had queued this step's request)
    events = [(run[0], i, 0, run[0], False) for i, run in enumerate(runs)]
    waiting = [0]  # requests queued in the LB (least-latency)
    lb = Crossbar(speeds, model["slots"]) if policy == "crossbar" else None
    heapq.heapify(events)
    durations = []
    while events:
        now, i, step, began, queued = heapq.heappop(events)
        if queued:  # picking again now that a slot has freed
            waiting[0] -= 1
        _, slow, measured, seen, draw, node = runs[i]
        if lb and step > 0 and not queued:  # the run's previous request was answered
            lb.answered(i, now)
        if step == 6:
            if measured:
                durations.append(now - began)
            continue
        work, expected = model["other_s"], model["other_s"]
        if step == 4:
            work = draw
            known = seen or not policy.endswith("-first")
            expected = mean_catalog * ((10 if slow else 1) if known else (1 + 9 * model["slow_share"]))
        if lb:
            finish = lb.dispatch(slots, work, step == 4, node, now, waiting, i)
        elif policy.startswith("online"):
            finish = dispatch_online(slots, placed, speeds, work, expected, now)
        elif policy.startswith("least-latency"):
            finish = dispatch_least_latency(slots, speeds, work, expected, now, model, waiting)
        else:
            finish = dispatch(slots, in_flight, speeds, work, now, policy)
        if finish is None:  # queued in the LB: pick again when the next slot frees
            again = min(f for member in slots for f in member if f > now)
            waiting[0] += 1
            heapq.heappush(events, (again, i, step, began, True))
            continue
        heapq.heappush(events, (finish, i, step + 1, began, False))
    return durations


class Ewma:
    """lb/src/pool.rs `Ewma`: an average whose samples fade over `decay` seconds."""
    def __init__(self, decay):
        self.decay, self.value, self.at = decay, None, None

    def record(self, sample, now):
        if self.value is None:
            self.value = sample
        else:
            keep = math.exp(-max(now - self.at, 0.0) / self.decay)
            self.value = self.value * keep + sample * (1 - keep)
        self.at = now


class Crossbar:
    """crossbar's least-latency as implemented, estimators and all (lb/src/pool.rs `pick` and
    `learn`, lb/src/balance.rs `shortest_expected_delay`): each member's averages of all
    requests, of catalogs (an average node's: time / the node's cost) and of the rest, decaying
    over 10 s, a sample counting as at most twice the average (`SAMPLE_CAP`); each node's cost
    learnt from its catalogs (half the old, half the new)."""
    DECAY_S = 10.0
    SAMPLE_CAP = 2.0

    def __init__(self, speeds, slots):
        self.speeds, self.slots = speeds, slots
        self.ewma = [{kind: Ewma(self.DECAY_S) for kind in ("all", "catalog", "other")} for _ in speeds]
        self.costs = {}
        self.turn = 0
        self.pending = {}  # run -> (member, catalog, node, sent)

    def dispatch(self, slots, work, catalog, node, now, waiting, run):
        factor = self.costs.get(node, 1.0) if catalog else 1.0
        kind = "catalog" if catalog else "other"

        def expected(m):
            latency = (self.ewma[m][kind].value or 0.0) * factor
            slot = self.ewma[m]["all"].value
            slot = latency if slot is None else slot
            if min(slots[m]) <= now:
                return latency
            return latency + slot * (waiting[0] + 1) / self.slots
        n = len(self.speeds)
        order = [(self.turn + k) % n for k in range(n)]
        self.turn += 1
        in_flight = lambda m: sum(f > now for f in slots[m])  # noqa: E731
        best = min(order, key=lambda m: (expected(m), in_flight(m)))
        if min(slots[best]) > now:
            return None
        free = min(slots[best])
        finish = now + work / self.speeds[best]
        slots[best][slots[best].index(free)] = finish
        self.pending[run] = (best, catalog, node, now)
        return finish

    def answered(self, run, now):
        member, catalog, node, sent = self.pending.pop(run)
        took = now - sent
        cost = 1.0
        if catalog:
            cost = self.costs.get(node, 1.0)
            average = self.ewma[member]["catalog"].value
            if average:
                sample = took / average
                self.costs[node] = 0.5 * self.costs.get(node, sample) + 0.5 * sample
        self.ewma[member]["all"].record(took, now)
        average = self.ewma[member]["catalog" if catalog else "other"]
        sample = took / cost
        if average.value is not None:
            sample = min(sample, self.SAMPLE_CAP * average.value)
        average.record(sample, now)


def dispatch(slots, in_flight, speeds, work, now, policy):
    """Assigns a request of `work` (seconds at speed 1) arriving `now`; returns its finish."""
    def finish_on(m):
        free = min(slots[m])
        return max(free, now) + work / speeds[m]
    if policy == "nowait":
        return now + work
    if policy == "clairvoyant":
        member = min(range(len(speeds)), key=finish_on)
    elif policy == "leastconn-maxconn":
        free = [m for m in range(len(speeds)) if min(slots[m]) <= now]
        if free:
            member = min(free, key=lambda m: (sum(f > now for f in slots[m]), m))
        else:
            member = min(range(len(speeds)), key=lambda m: (min(slots[m]), m))
    else:
        for m in range(len(speeds)):
            in_flight[m] = [f for f in in_flight[m] if f > now]
        member = min(range(len(speeds)), key=lambda m: (len(in_flight[m]) / len(slots[m]), m))
    finish = finish_on(member)
    slot = slots[member].index(min(slots[member]))
    slots[member][slot] = finish
    in_flight[member].append(finish)
    return finish


def dispatch_online(slots, placed, speeds, work, expected, now):
    """Assigns a request where its expected finish is soonest, estimating each member's slots
    from the expected work of what it holds (a running request's expected remainder, at least
    a little; a queued one's whole); returns its actual finish."""
    def expected_finish(m):
        placed[m] = [r for r in placed[m] if r[1] > now]
        free = []
        for start, _, exp in placed[m]:
            if start <= now:
                free.append(now + max(exp / speeds[m] - (now - start), 0.01))
        free += [now] * (len(slots[m]) - len(free))
        for start, _, exp in sorted(r for r in placed[m] if r[0] > now):
            free.sort()
            free[0] += exp / speeds[m]
        return min(free) + expected / speeds[m]
    member = min(range(len(speeds)), key=expected_finish)
    free = min(slots[member])
    start = max(free, now)
    finish = start + work / speeds[member]
    slots[member][slots[member].index(free)] = finish
    placed[member].append((start, finish, expected))
    return finish


def dispatch_least_latency(slots, speeds, work, expected, now, model, waiting):
    """crossbar's least-latency (lb/src/balance.rs `shortest_expected_delay`), with max_in_flight
    = slots and its averages at their long-run means: a member with room is expected to take
    this request's mean time there; a full one that plus its average slot time (all requests)
    times (queued + 1) / slots. Returns the actual finish, or None to wait in the LB's queue."""
    mean_catalog = model["median_s"] * math.exp(model["sigma"] ** 2 / 2) * (1 + 9 * model["slow_share"])
    slot_time = (5 * model["other_s"] + mean_catalog) / 6

    def has_room(m):
        return min(slots[m]) <= now

    def expected_delay(m):
        latency = expected / speeds[m]
        if has_room(m):
            return latency
        return latency + slot_time / speeds[m] * (waiting[0] + 1) / len(slots[m])
    member = min(range(len(speeds)), key=lambda m: (expected_delay(m), m))
    if not has_room(member):
        return None
    free = min(slots[member])
    finish = now + work / speeds[member]
    slots[member][slots[member].index(free)] = finish
    return finish


def p99(values):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))]


POLICIES = ("nowait", "clairvoyant", "online", "online-first", "least-latency", "least-latency-first", "crossbar", "leastconn", "leastconn-maxconn")


def p99_by_policy(model, load, seconds, warmup=0.0, seeds=20):
    """Each policy's p99 run time (s) for each of `seeds` seeds: the same runs and draws for
    every policy within a seed."""
    out = {policy: [] for policy in POLICIES}
    for seed in range(seeds):
        runs, _ = runs_for(model, load, seconds, seed, warmup)
        for policy in POLICIES:
            out[policy].append(p99(simulate(model, runs, policy)))
    return out


MODEL = {"slots": 4, "speeds": [1.0, 1.0, 1.0, 0.5], "median_s": 0.2, "sigma": 0.6, "slow_share": 0.1, "other_s": 0.01}


def main():
    load = float(sys.argv[1]) if len(sys.argv) > 1 else 0.8
    if len(sys.argv) > 2 and sys.argv[2] == "bench":
        warmup = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
        runs, agents = bench_runs(MODEL, load, 120, warmup)
        print(f"the benchmark's draws: {agents} agents, {sum(r[2] for r in runs)} runs measured")
        figures = {policy: p99(simulate(MODEL, runs, policy)) for policy in POLICIES}
        for policy in POLICIES:
            ratio = figures[policy] / figures["leastconn-maxconn"]
            print(f"{policy}: p99 {figures[policy]:.2f} s, {ratio:.2f}× leastconn-maxconn")
        return
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    warmup = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    figures = p99_by_policy(MODEL, load, 120, warmup, seeds)
    for seed in range(seeds):
        print(f"seed {seed}: " + "; ".join(f"{policy} {figures[policy][seed]:.2f} s" for policy in POLICIES))
    for policy in POLICIES:
        values = sorted(figures[policy])
        print(f"{policy}: median {values[len(values) // 2]:.2f} s, range {values[0]:.2f}-{values[-1]:.2f} s")
    for policy in POLICIES[1:-1]:
        ratios = sorted(c / l for c, l in zip(figures[policy], figures["leastconn-maxconn"]))
        print(f"{policy} / leastconn-maxconn, same draws: median {ratios[len(ratios) // 2]:.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}, {sum(r <= 0.9 for r in ratios)} of {len(ratios)} at or under 0.9")


if __name__ == "__main__":
    main()
