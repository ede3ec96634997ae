"""Check pixdiff's FID Inception against the upstream pytorch-fid module (run once, by hand).

Needs a throwaway environment with the upstream packages -- never pixdiff's own dependencies:

    python3 -m venv /tmp/fidenv && /tmp/fidenv/bin/pip install torch torchvision pytorch-fid
    PYTHONPATH=. /tmp/fidenv/bin/python tools/fid_inception_upstream.py listing   # -> tests/data/fid_inception_official_state_dict.tsv
    PYTHONPATH=. /tmp/fidenv/bin/python tools/fid_inception_upstream.py compare --tf-resize PATH

``listing`` writes the state-dict key names and shapes of pytorch-fid's ``fid_inception_v3``
architecture (torchvision's Inception3 with 1008 classes and its FIDInception blocks), built
without its download; the test suite compares pixdiff's module with that table.
``compare`` saves one random state dict, loads it into both networks, feeds both the same random
images and prints the largest absolute differences of pool3, the mixed_6/conv spatial features
and the logits as JSON. ``--tf-resize`` names torch-fidelity's interpolate_compat_tensorflow.py
(from its repository) to compare the TF1 resize too. Not imported by pixdiff or its tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

LISTING = Path(__file__).resolve().parents[1] / "tests" / "data" / "fid_inception_official_state_dict.tsv"


def upstream_network() -> torch.nn.Module:
    """pytorch-fid's fid_inception_v3() minus its load_state_dict_from_url."""
    from pytorch_fid import inception as pf

    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    return net.eval()


def listing() -> None:
    import pytorch_fid

    state = upstream_network().state_dict()
    rows = [f"{k}\t{tuple(v.shape)}" for k, v in state.items() if not k.endswith("num_batches_tracked")]
    header = [f"# FID Inception-v3: the state dict of pytorch-fid {pytorch_fid.__version__}'s fid_inception_v3() "
              "architecture (torchvision's Inception3,",
              "# 1008 classes, no aux logits, its FIDInceptionA/C/E_1/E_2 blocks), key<TAB>shape, listed by "
              "tools/fid_inception_upstream.py listing;",
              "# num_batches_tracked left out: torch-fidelity's TF converter writes none and pixdiff ignores them.",
              ]
    LISTING.write_text("\n".join(header + rows) + "\n")
    print(f"{len(rows)} tensors -> {LISTING}")


def random_state(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Weights that keep activations O(1) through 94 units: He-scaled convs, BN near identity."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var"):
            t = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("bn.weight"):
            t = 0.8 + 0.4 * torch.rand(v.shape, generator=g)
        elif k.endswith(("bn.bias", "running_mean", "fc.bias")):
            t = 0.1 * torch.randn(v.shape, generator=g)
        else:
            t = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
        state[k] = t
    return state


def upstream_heads(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """pool3, mixed_6/conv (7 channels, NHWC-flattened) and bias-free logits of torchvision's graph."""
    seen = {}
    hook = net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: seen.setdefault("s", o))
    h = x
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"):
        h = getattr(net, name)(h)
    hook.remove()
    pool3 = h.flatten(1)
    spatial = seen["s"][:, :7].permute(0, 2, 3, 1).flatten(1)
    return pool3, spatial, pool3 @ net.fc.weight.T


def compare(seed: int, n: int, tf_resize: str | None) -> None:
    from pytorch_fid import inception as pf

    from pixdiff.eval import inception as ours

    torch.manual_seed(seed)
    theirs = upstream_network()
    state = random_state(theirs, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random-inception.pth"
        torch.save(state, path)
        mine = ours.load_weights(path, expected_sha256=None)
        theirs.load_state_dict(torch.load(path, weights_only=True), strict=False)
    images = torch.randint(0, 256, (n, 3, 256, 256), generator=torch.Generator().manual_seed(seed + 1))
    out: dict[str, object] = {"seed": seed, "n": n, "input": "uint8 (N, 3, 256, 256)", "torch": torch.__version__}
    with torch.no_grad():
        x = ours.preprocess(images)  # the same network input for both
        a, b = mine(x), upstream_heads(theirs, x)
        for name, u, v in zip(("pool3", "spatial", "logits"), a, b):
            out[f"max_abs_diff_{name}"] = (u - v).abs().max().item()
            out[f"max_abs_{name}"] = v.abs().max().item()
        # pytorch-fid's own wrapper (its preprocessing: half-pixel bilinear, 2 * x / 255 - 1)
        pf.fid_inception_v3 = lambda: theirs  # the wrapper builds its blocks from this, minus the download
        wrapper = pf.InceptionV3([3]).eval()
        pf_pool3 = wrapper(images.float() / 255.0)[0].flatten(1)
        ours_pf_input = mine(2.0 * F.interpolate(images.float() / 255.0, size=(299, 299), mode="bilinear",
                                                 align_corners=False) - 1.0)[0]
        out["max_abs_diff_pool3_pytorch_fid_wrapper_same_input"] = (ours_pf_input - pf_pool3).abs().max().item()
        out["max_abs_diff_pool3_tf_vs_pytorch_fid_preprocessing"] = (a[0] - pf_pool3).abs().max().item()
        if tf_resize:
            spec = importlib.util.spec_from_file_location("tfresize", tf_resize)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            ref = mod.interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(299, 299), align_corners=False)
            out["max_abs_diff_resize_vs_torch_fidelity"] = (ours.tf1_resize_bilinear(images.float(), 299) - ref
                                                            ).abs().max().item()
    print(json.dumps(out, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("listing")
    c = sub.add_parser("compare")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--n", type=int, default=8)
    c.add_argument("--tf-resize", default=None)
    args = parser.parse_args()
    listing() if args.cmd == "listing" else compare(args.seed, args.n, args.tf_resize)


if __name__ == "__main__":
    sys.exit(main())
