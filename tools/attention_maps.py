"""The attention maps of a teacher kept by `attention_attempt.py --keep-teacher`, beside the same
network at initialisation: per held-out image a row each (image, patch mask, each head's attention,
each head's 60 %-mass set).

    python tools/attention_maps.py OUT.pt maps.png -- <the attempt's trainer flags>
"""
import sys

import torch
import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
from dino_ref.train import parse_args, make_student
from dino_ref.train.objects import make_objects
from dino_ref.train.attention import class_token_attention, mass_threshold, patch_mask
torch.set_num_threads(1)
state, out, argv = sys.argv[1], sys.argv[2], sys.argv[sys.argv.index("--") + 1:]
config = parse_args(argv)
x, m, y = make_objects(2, 32, config.seed + 3_000_005)
torch.manual_seed(config.seed); init = make_student(config)
net = make_student(config); net.load_state_dict(torch.load(state))
G = 32 // config.patch_size; H = config.vit_heads
fig, ax = plt.subplots(2 * 6, 2 + 2 * H, figsize=(2 + 2 * H, 12))
for r in range(6):
    for k, model in enumerate((init, net)):
        row = 2 * r + k
        a = class_token_attention(model.backbone, x[r:r + 1])[0]
        t = mass_threshold(a)
        ax[row, 0].imshow(x[r].permute(1, 2, 0)); ax[row, 1].imshow(patch_mask(m[r:r+1], config.patch_size)[0].view(G, G))
        for h in range(H):
            ax[row, 2 + h].imshow(a[h].view(G, G)); ax[row, 2 + H + h].imshow(t[h].view(G, G))
        ax[row, 0].set_ylabel(["init", "trained"][k])
for a in ax.flat: a.set_xticks([]); a.set_yticks([])
fig.savefig(out, dpi=60)
