#!/usr/bin/env python3
"""Load for bench/lb-compilers.sh: catalog requests through crossbar and straight to a compiler.

  latency  URL_LB URL_DIRECT N   -- N interleaved pairs over kept-alive connections; prints JSON
  load     URL_LB SECONDS OUT    -- back-to-back catalog POSTs for SECONDS; one JSON line per request
Client TLS material comes from $CERT, $KEY, $CACERT; the certname from $CERTNAME.
"""
import http.client, json, os, ssl, statistics, sys, time, urllib.parse

CERTNAME = os.environ.get("CERTNAME", "agent1.example.com")
BODY = "environment=production&facts_format=application%2Fjson"
PATH = f"/puppet/v3/catalog/{CERTNAME}?environment=production"
IDENTITY = {"X-Client-Verify": "SUCCESS", "X-Client-DN": f"CN={CERTNAME}"}


def connect(url):
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=os.environ["CACERT"])
        ctx.load_cert_chain(os.environ["CERT"], os.environ["KEY"])
        return http.client.HTTPSConnection("localhost", u.port, context=ctx, timeout=60), {}
    return http.client.HTTPConnection(u.hostname, u.port, timeout=60), IDENTITY


def catalog(conn, extra):
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json", **extra}
    start = time.perf_counter()
    conn.request("POST", PATH, body=BODY, headers=headers)
    response = conn.getresponse()
    body = response.read()
    return time.perf_counter() - start, response.status, response.getheader("Retry-After"), body


def compiled_by(body):
    text = body.decode(errors="replace")
    marker = "compiled by "
    i = text.find(marker)
    return text[i + len(marker):].split('"')[0] if i >= 0 else "-"


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def latency(lb_url, direct_url, n):
    lb, lb_h = connect(lb_url)
    direct, direct_h = connect(direct_url)
    for _ in range(5):  # warm both connections and the compiler's JRuby
        catalog(lb, lb_h); catalog(direct, direct_h)
    lb_t, direct_t, diffs = [], [], []
    for i in range(n):
        order = [(lb, lb_h, lb_t), (direct, direct_h, direct_t)]
        if i % 2:
            order.reverse()
        for conn, headers, sink in order:
            elapsed, status, _, _ = catalog(conn, headers)
            assert status == 200, status
            sink.append(elapsed)
        diffs.append(lb_t[-1] - direct_t[-1])
    ms = lambda v: round(v * 1000, 3)
    print(json.dumps({
        "pairs": n,
        "through_lb_ms": {"p50": ms(pct(lb_t, 50)), "p90": ms(pct(lb_t, 90)), "p99": ms(pct(lb_t, 99))},
        "direct_ms": {"p50": ms(pct(direct_t, 50)), "p90": ms(pct(direct_t, 90)), "p99": ms(pct(direct_t, 99))},
        "added_ms": {"median_of_pair_differences": ms(statistics.median(diffs)), "p50_difference": ms(pct(lb_t, 50) - pct(direct_t, 50))},
    }))


def load(lb_url, seconds, out):
    conn, headers = connect(lb_url)
    end = time.time() + seconds
    with open(out, "w") as sink:
        while time.time() < end:
            started = time.time()
            try:
                elapsed, status, retry_after, body = catalog(conn, headers)
                record = {"t": started, "s": round(elapsed, 4), "status": status, "retry_after": retry_after, "by": compiled_by(body)}
            except Exception as error:  # a connection error is a failure of the LB
                record = {"t": started, "s": round(time.time() - started, 4), "status": 0, "error": str(error), "by": "-"}
                conn, headers = connect(lb_url)
            sink.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "latency":
        latency(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        load(sys.argv[2], float(sys.argv[3]), sys.argv[4])
