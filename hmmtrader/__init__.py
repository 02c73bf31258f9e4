"""The `hmmtrader` console script: trading's commands plus those of flows/ (and later
serving/). trading/ itself never imports flows/ or serving/."""
