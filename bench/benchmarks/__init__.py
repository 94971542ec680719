"""asv benchmarks for metakern. The workloads come from ``metakern.bench`` (the cases behind
``metakern bench``), so the two suites always time the same thing."""
