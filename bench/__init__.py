"""parcelzarr benchmark suite: parcelzarr against the approaches users would otherwise pick.

Run with ``make bench`` (full county) or ``make bench-quick`` (smoke test); see ``docs/bench.md``.

Modules
-------
``_config``      scenario sizes and sampling per mode (quick / full)
``_scenario``    synthetic data (cached), COG conversion, Azurite upload, ingest
``_stats``       the per-parcel statistics oracle shared by the baselines, and result checks
``_approaches``  the approaches themselves (run inside a worker subprocess)
``_worker``      subprocess entry point: run one approach, measure wall time and peak RSS
``_measure``     run workers against the latency proxy and turn counters into records
``_report``      results.json, the RESULTS.md section and the chart
``_env``         machine and version information
"""
