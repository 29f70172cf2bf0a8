"""The reset lab: network namespaces client — router — proxy — server reproducing each reset cause.

- ``netlab``: the Lab builder (namespaces, veths, egress guards, processes, tcpdump captures).
- ``scenarios``: one function per reset cause, with its ground truth.
- ``agents``: the small Python servers, clients and packet forgers run inside the namespaces.
- ``dump``: ``python -m tests.lab.dump OUTDIR [--only NAME...]`` keeps every scenario's captures.
- ``session``: what the pytest fixture (tests/conftest.py) hands to lab tests.

Needs root. ``RSTLAB_DEBUG=1`` prints progress with timestamps on stderr.
"""
