"""The local harness: everything needed to run and test the product on one machine.

Not part of the product (not in the wheel): process helpers, a SeaweedFS S3 server,
a local Airflow deployment, the demo, the simulated labeller, demo landing data and the
modAL reference implementation the tests compare the Spark query with.
"""
