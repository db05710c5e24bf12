#!/usr/bin/python3
"""What the balancing scenario's p99 could be at best: the benchmark's compiler model
(bench/fleet.py `balance`: JRuby-like slots, log-normal compile times, slow environments, one
half-speed compiler) and its agents, simulated in discrete events with no network and no LB
cost, under two policies:

- `clairvoyant`: each request goes where it will finish soonest, knowing the exact compile
  time of every request already queued and of this one on each compiler (earliest finish
  time). No online balancer knows this much; it bounds what one can do from below, in practice.
- `leastconn`: the member with the fewest requests in flight per slot, the request queued
  inside it if all its slots are busy (HAProxy's `leastconn`, roughly), as a check that the
  model matches the measured runs.
- `online`: each request where it is expected to finish soonest, from what an LB can know: the
  requests on each member and how long they have run, the mean work of a light request and of
  a catalog, and (steady state) whether the node is in a slow environment, but never the
  compile time drawn for a request.
- `nowait`: every request on a free full-speed slot at once (the report's no-wait floor, with
  this seed's draws).

    bench/oracle.py [LOAD] [SEEDS]     # e.g. 0.8 5: p99 run time per policy and seed

Used by the report (`bench/report_fleet.py`) for the balance section. Pure Python: no timing
of this machine enters the figures."""
import heapq
import math
import random
import sys


def runs_for(model, load, seconds, seed, warmup=0.0, interval=30.0):
    """The agents' runs: (start time, node is slow, measured, node has run before, the compile
    time drawn for its catalog) in start order, at `load` of the
    compilers' capacity, each agent every `interval` with a random offset (splay)."""
    rng = random.Random(seed)
    mean_catalog = model["median_s"] * math.exp(model["sigma"] ** 2 / 2) * (1 + 9 * model["slow_share"])
    per_run = 5 * model["other_s"] + mean_catalog
    capacity = model["slots"] * sum(model["speeds"]) / per_run
    agents = round(capacity * load * interval)
    runs = []
    for _ in range(agents):
        offset, slow = rng.uniform(0, interval), rng.random() < model["slow_share"]
        k = 0
        while offset + k * interval < warmup + seconds:
            start = offset + k * interval
            draw = model["median_s"] * math.exp(rng.gauss(0, model["sigma"])) * (10 if slow else 1)
            runs.append((start, slow, start >= warmup, k > 0, draw))
            k += 1
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
    events = [(run[0], i, 0, run[0]) for i, run in enumerate(runs)]
    waiting = [0]  # requests queued in the LB (least-latency)
    heapq.heapify(events)
    durations = []
    while events:
        now, i, step, began = heapq.heappop(events)
        if step != int(step):  # a request the LB had queued, picking again
            step = int(step + 0.5)
            waiting[0] -= 1
        _, slow, measured, seen, draw = runs[i]
        if step == 6:
            if measured:
                durations.append(now - began)
            continue
        work, expected = model["other_s"], model["other_s"]
        if step == 4:
            work = draw
            known = seen or not policy.endswith("-first")
            expected = mean_catalog * ((10 if slow else 1) if known else (1 + 9 * model["slow_share"]))
        if policy.startswith("online"):
            finish = dispatch_online(slots, placed, speeds, work, expected, now)
        elif policy.startswith("least-latency"):
            finish = dispatch_least_latency(slots, speeds, work, expected, now, model, waiting)
            if finish is None:  # queued in the LB: pick again when the next slot frees
                again = min(f for member in slots for f in member if f > now)
                waiting[0] += 1
                heapq.heappush(events, (again, i, step - 0.5, began))
                continue
        else:
            finish = dispatch(slots, in_flight, speeds, work, now, policy)
        heapq.heappush(events, (finish, i, step + 1, began))
    return durations


def dispatch(slots, in_flight, speeds, work, now, policy):
    """Assigns a request of `work` (seconds at speed 1) arriving `now`; returns its finish."""
    def finish_on(m):
        free = min(slots[m])
        return max(free, now) + work / speeds[m]
    if policy == "nowait":
        return now + work
    if policy == "clairvoyant":
        member = min(range(len(speeds)), key=finish_on)
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


POLICIES = ("nowait", "clairvoyant", "online", "online-first", "least-latency", "least-latency-first", "leastconn")


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
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    warmup = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    figures = p99_by_policy(MODEL, load, 120, warmup, seeds)
    for seed in range(seeds):
        print(f"seed {seed}: " + "; ".join(f"{policy} {figures[policy][seed]:.2f} s" for policy in POLICIES))
    for policy in POLICIES:
        values = sorted(figures[policy])
        print(f"{policy}: median {values[len(values) // 2]:.2f} s, range {values[0]:.2f}-{values[-1]:.2f} s")
    for policy in POLICIES[1:-1]:
        ratios = sorted(c / l for c, l in zip(figures[policy], figures["leastconn"]))
        print(f"{policy} / leastconn, same draws: median {ratios[len(ratios) // 2]:.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}, {sum(r <= 0.9 for r in ratios)} of {len(ratios)} at or under 0.9")


if __name__ == "__main__":
    main()
