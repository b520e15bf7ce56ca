"""`python -m bench [PART]...`: index grpc workers scale reload client adapters inspect principals fleet soak.

Default: every part but `soak`, which runs for minutes (180 s; `--seconds` changes it) and is
asked for by name.

Pins this process (the in-process benchmark and the gRPC load generator) to core 1 before gRPC
starts any thread, so the servers, pinned to core 0, never share a core with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

CLIENT_CPU = 1
ALL_PARTS = (
    "index", "grpc", "workers", "scale", "reload", "client", "adapters", "inspect", "principals", "fleet", "soak",
)
DEFAULT_PARTS = ALL_PARTS[:-1]  # the soak takes minutes: only when named


def _pin() -> str:
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return "not pinned (no sched_setaffinity here)"
    if allowed == {CLIENT_CPU}:
        return f"client already pinned to core {CLIENT_CPU}, servers to core 0"
    if CLIENT_CPU not in allowed or len(allowed) < 2:
        return f"not pinned (cores available: {sorted(allowed)})"
    os.sched_setaffinity(0, {CLIENT_CPU})
    return f"client pinned to core {CLIENT_CPU}, servers to core 0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", choices=[*ALL_PARTS, []],
                        metavar="|".join(ALL_PARTS), help="what to run (default: all but soak)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds per row (default 5: one round here can be off by 15%%)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="measured seconds per round (default 1.0 in-process, 1.5 gRPC)")
    parser.add_argument("--quick", action="store_true", help="one short round per row: a smoke test")
    parser.add_argument("--metrics", action="store_true", help="grpc: the sidecar serves with --metrics-listen")
    parser.add_argument("--no-shadow", action="store_true",
                        help="grpc: the workload's mapping without its shadow (dry-run) category")
    parser.add_argument("--rows", default=None, metavar="TEXT", help="grpc: only the rows whose name holds TEXT")
    args = parser.parse_args(argv)
    parts = args.parts or list(DEFAULT_PARTS)
    rounds = 1 if args.quick else args.rounds

    pinning = _pin()  # before anything imports grpc
    from bench import workload as workload_module

    workload = workload_module.build()
    print(f"workload: {workload.describe()}")
    print(f"cpu: {pinning}; {os.cpu_count()} cores; python {sys.version.split()[0]}\n", flush=True)
    started = time.monotonic()

    if "index" in parts:
        from bench import bench_index

        seconds = 0.3 if args.quick else (args.seconds or 1.0)
        rows = bench_index.run(workload, seconds=seconds, rounds=rounds)
        print(f"(a) in-process, median of {rounds} rounds of {seconds:g} s")
        print(bench_index.format_rows(rows) + "\n", flush=True)

    if "grpc" in parts:
        from bench import bench_grpc

        seconds = 0.5 if args.quick else (args.seconds or 1.5)
        grpc_workload, grpc_varying = workload, workload_module.build_varying()
        if args.no_shadow:
            grpc_workload, grpc_varying = workload_module.without_shadow(workload), workload_module.without_shadow(
                grpc_varying)
            print("grpc: the mapping without its shadow category")
        if args.metrics:
            print("grpc: the sidecar serves with --metrics-listen")
        rows_g = bench_grpc.run(
            grpc_workload, varying=grpc_varying, seconds=seconds,
            warmup=0.2 if args.quick else 0.3, rounds=rounds,
            log=lambda line: print(line, file=sys.stderr, flush=True), metrics=args.metrics, rows_matching=args.rows,
        )
        print(f"(b)-(d) gRPC vs the empty-handler floor, interleaved floor/sidecar x {rounds} rounds of {seconds:g} s; "
              "medians; ratio = sidecar / floor of the same round (throughput: higher is better; latency: lower)")
        print(bench_grpc.format_rows(rows_g), flush=True)

    if "workers" in parts:
        from bench import bench_workers

        seconds = 0.5 if args.quick else (args.seconds or 1.5)
        row = bench_workers.run_workers(
            workload, seconds=seconds, warmup=0.2 if args.quick else 0.3, rounds=rounds,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
        print(f"\n(e) serve --workers 1 vs --workers 2, interleaved x {rounds} rounds of {seconds:g} s; medians; "
              "ratio = workers=2 / workers=1 of the same round")
        print(bench_workers.format_workers(row), flush=True)

    if "scale" in parts:
        from bench import bench_scale

        seconds = 0.3 if args.quick else (args.seconds or 1.0)
        large = workload_module.build_scale(consent_ids=workload_module.N_CATEGORIES)
        large_full = workload_module.build_scale()
        print(f"\nlarge workload: {large_full.describe()}", flush=True)
        result = bench_scale.run(workload, large, large_full, seconds=seconds, rounds=rounds,
                                 log=lambda line: print(line, file=sys.stderr, flush=True))
        print(f"(f) mapping scale, decision rows interleaved x {rounds} rounds of {seconds:g} s; "
              "ratio = large / small of the same round")
        print(bench_scale.format_result(result), flush=True)

    if "reload" in parts:
        from bench import bench_reload

        report = bench_reload.run(workload, edits=10 if args.quick else 50,
                                  seconds=0.5 if args.quick else (args.seconds or 2.0), rounds=rounds)
        print("\n(g) hot reload: edit-to-live latency, and Decide throughput during edit storms vs quiet")
        print(bench_reload.format_report(report), flush=True)

    if "client" in parts:
        from bench import bench_client

        print("\n(h) Python client: stream() and decide_many() vs unary decide(), and embedded mode", flush=True)
        bench_client.run(seconds=0.3 if args.quick else (args.seconds or 1.5), rounds=rounds)

    if "adapters" in parts:
        from bench import bench_adapters

        print("\n(i) CMP adapters: decode_gpp per call vs the TC / US Privacy decoders inside it", flush=True)
        print(bench_adapters.format_rows(bench_adapters.run(passes=1 if args.quick else 7)), flush=True)

    if "inspect" in parts:
        from bench import bench_inspect

        sizes = (20_000, 100_000) if args.quick else (100_000, 1_000_000)
        print(f"\n(j) consent-sidecar inspect, one core, best of {rounds} runs: events/s and the child's peak RSS",
              flush=True)
        print(bench_inspect.format_rows(bench_inspect.run(sizes, rounds=rounds)), flush=True)

    if "principals" in parts:
        from bench import bench_principals

        print("\n(k) a removed principal's token, refused by a running sidecar", flush=True)
        print(bench_principals.format_result(bench_principals.run(5 if args.quick else 20)), flush=True)

    if "fleet" in parts:
        from bench import bench_fleet

        def note(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

        writes = 20 if args.quick else 200
        print("\n(l) etcd fleet store: convergence of owner writes over 10 sidecars; Decide file- vs etcd-backed",
              flush=True)
        print(bench_fleet.format_convergence(bench_fleet.run_convergence(workload, writes=writes, log=note)),
              flush=True)
        seconds = 0.5 if args.quick else (args.seconds or 1.5)
        row = bench_fleet.run_throughput(workload, seconds=seconds, warmup=0.2 if args.quick else 0.3,
                                         rounds=rounds, log=note)
        print(bench_fleet.format_throughput(row), flush=True)

    if "soak" in parts:
        from bench import bench_soak

        seconds = 10.0 if args.quick else (args.seconds or 180.0)
        print(f"\n(m) soak: {seconds:g} s of valid and hostile traffic, admin writes and hand edits", flush=True)
        report = bench_soak.run(workload, seconds=seconds, warmup=min(10.0, seconds / 6),
                                log=lambda line: print(line, file=sys.stderr, flush=True))
        print(bench_soak.format_report(report), flush=True)

    print(f"\ntotal {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
