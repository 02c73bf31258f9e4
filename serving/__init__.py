"""The HTTP apps, one subpackage per deployable: `serving.inference` (the model server) and
`serving.ops` (the node's ops API and the live dashboard). `serving.auth` is what both
share: bearer tokens and one-line JSON errors."""
