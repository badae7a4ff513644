"""What every task shares: the run skeleton, the Accelerate training loop, checkpoints, tracking,
summaries and the shared command-line options."""
