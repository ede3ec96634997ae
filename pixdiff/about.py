"""The one description of the project: `pixdiff --help` and the package show it; a test checks that
pyproject.toml and the README's opening say the same."""

DESCRIPTION = ("A modular PyTorch toolkit for pixel-space diffusion: DiP, its ablations, JiT, PixNerd, PixelDiT "
               "and DeCo from swappable parts, assembled by recipe files.")
