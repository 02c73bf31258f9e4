"""The inference server: the registry's production model over HTTP, hot-swapped when the
alias moves (`hmmtrader serve`)."""
