"""Pipeline stages: each is `run(ctx) -> small result dict`, with I/O through the context's resources."""

STAGES = ("extract", "features", "train", "evaluate", "register", "deploy")
