"""mailsift benchmarks: standalone scripts that print their figures.

    .venv/bin/python -m benchmarks            # all of them, one after another
    .venv/bin/python -m benchmarks --quick    # smaller sizes
    .venv/bin/python -m benchmarks engine     # one (engine, pipeline, normalize, gate, warehouse)

``benchmarks.world`` builds the shared benchmark world (a simulated internet with
latency, Zipf-sized domains); see ``benchmarks/README.md``.
"""
