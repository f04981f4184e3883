"""The training loop and what it needs: optimizers and schedules, evaluation, the run directory,
metrics (TensorBoard, console) and data-parallel training with torch.distributed."""
