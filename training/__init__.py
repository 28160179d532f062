"""Training orchestration: option checks, data and model set-up, the two-stage fit, evaluation."""
