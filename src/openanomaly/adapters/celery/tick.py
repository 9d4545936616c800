"""The scheduler's tick task (``openanomaly.tick``); a placeholder until it is written."""
