"""The solvers' names, torch-free, so that command-line help lists them without importing torch;
`solvers.SOLVERS` is built from this tuple (a name without a solver function fails at import)."""

SOLVER_NAMES = ("euler", "heun", "ab2", "ddim", "ddpm_ancestral", "euler_maruyama", "odeint", "meanflow")
