"""`magworld bench ...`: benchmarks that print the figures quoted in the README.

Each module in BENCH_MODULES registers one or more benchmarks with `register(subparsers)`.
Speed is shown here, never by timed tests.
"""

from worldmodel.cli.common import register_group

BENCH_MODULES = ["worldmodel.bench_generate", "worldmodel.bench_train", "worldmodel.data.bench_record", "runtime.bench_serve",
                 "runtime.bench_soak"]


def register(sub):
    register_group(
        sub,
        "bench",
        help="measure speed: generator loop, training steps, recorder, server",
        description="Benchmarks. Each prints a table and names the machine it ran on.",
        modules=BENCH_MODULES,
    )
