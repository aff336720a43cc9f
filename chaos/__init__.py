"""Herald's chaos harness: faults under load against every service as its own process, and an RPC fuzzer.

See docs/reliability.md for the scenarios and the table of the last full run; `python -m chaos --help`.
"""
