"""The official layouts' names and whose files they are, torch-free, so that command-line help lists
them without importing torch; `layouts.LAYOUTS` is built from this table."""

LAYOUT_ORIGINS = {
    "dip": "DiP's reference code: a bare state dict or a Lightning checkpoint",
    "jit": "LTH14/JiT's main_jit.py checkpoints",
    "pixeldit": "NVlabs/PixelDiT's c2i Lightning checkpoints",
    "pixnerd": "MCG-NJU/PixNerd's Lightning checkpoints",
    "deco": "Zehong-Ma/DeCo's Lightning checkpoints",
}
DEFAULT_LAYOUT = "dip"
