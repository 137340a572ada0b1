"""Lightning callbacks of isam2: test-stage figures and wandb media (wandb_media)."""
