"""The local stack: Prefect, MLflow, a worker, the model server and the bridge on loopback."""
