"""`python -m vilactl.pipeline.cli` (also what torchrun runs)."""
from vilactl.pipeline.cli import main

main()
