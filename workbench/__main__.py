"""`python -m workbench ...` is `wb ...`; torchrun starts it as `torchrun ... -m workbench train ...`."""
from workbench.cli import run

run()
