"""The job tasks ``openanomaly.train``, ``openanomaly.infer`` and ``openanomaly.backtest``."""
