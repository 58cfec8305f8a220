"""semisep.training: separator and critics, losses, the training step, Ray Train and MLflow wrappers."""
