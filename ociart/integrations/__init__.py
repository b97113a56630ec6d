"""Optional integrations: MLflow (``pip install ociart[mlflow]``) and W&B (``pip install ociart[wandb]``)."""
