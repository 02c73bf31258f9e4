"""The trading node's ops API (status, kill switch, retrain) and the live dashboard with its
static page (`hmmtrader ops serve`, `hmmtrader dashboard`)."""
