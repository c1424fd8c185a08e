"""Monitoring: prediction-log windows, data quality, live quality, drift, the retrain policy."""
