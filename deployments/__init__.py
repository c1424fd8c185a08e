"""What deploys: the plan that turns prefect.yaml (at the repository root) into deployments on a work pool."""
