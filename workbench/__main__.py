"""`python -m workbench ...` is `mtwb ...`; torchrun starts it as `torchrun ... -m workbench train ...`."""
from workbench.cli import run

run()
