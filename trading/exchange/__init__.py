"""A local Binance Spot exchange: the matching engine, the account, the ledger, request
weights and the market tape it replays from the lake. The protocol (REST and WebSockets)
is served by `serving.exchange`; this package knows nothing of HTTP."""
