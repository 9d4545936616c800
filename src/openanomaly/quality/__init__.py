"""Detection-quality measurement: scorers that compare written anomaly scores with labels.

Pure numpy; nothing here talks to a TSDB (the benches in ``bench/`` do that).
"""
