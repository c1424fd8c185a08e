"""Training: hyperparameter search, holdout evaluation, the promotion gate and the model card."""
