"""The shell of hmm-trader: the `hmmtrader` command line (hmmtrader.cli), the full-stack
quickcheck and the benchmarks (hmmtrader.bench). The only package that knows typer; it
imports trading/, flows/ and serving/, and none of them imports it."""
