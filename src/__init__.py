"""Knowledge distillation of the SBI deepfake detector: data, models, SAM, losses and the training engine."""
