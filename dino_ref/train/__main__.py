"""`python -m dino_ref.train`: the toy trainer's command line (`--help` lists every flag)."""

from .loop import main

main()
