"""What a teacher kept by `attention_attempt.py --keep-teacher` encodes: k-NN accuracy (train split
as memory, test split as queries) on the shape and on nuisances read off the images and masks:
the object's colour against the background (the sign per channel, 8 classes), the quadrant of its
centroid (4), its area quartile (4); for the trained teacher and the same network at init.

    python tools/feature_probe.py OUT.pt -- <the attempt's trainer flags>
"""
import sys

import torch
from dino_ref.train import parse_args, make_student
from dino_ref.train.objects import make_objects
from dino_ref.train.knn import knn_accuracy
torch.set_num_threads(1)
state, argv = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
config = parse_args(argv)
def attrs(x, m, y):
    area = m.float().mean((1, 2))
    inside = (x * m.unsqueeze(1)).sum((2, 3)) / m.sum((1, 2)).unsqueeze(1)
    outside = (x * ~m.unsqueeze(1)).sum((2, 3)) / (~m).sum((1, 2)).unsqueeze(1)
    colour = ((inside > outside).long() * torch.tensor([4, 2, 1])).sum(1)   # 8 sign patterns
    ys, xs = torch.meshgrid(torch.arange(32.), torch.arange(32.), indexing="ij")
    cy = (m * ys).sum((1, 2)) / m.sum((1, 2)); cx = (m * xs).sum((1, 2)) / m.sum((1, 2))
    quadrant = (cy > 16).long() * 2 + (cx > 16).long()
    size = torch.bucketize(area, torch.quantile(area, torch.tensor([0.25, 0.5, 0.75])))
    return {"shape": (y, 5), "colour": (colour, 8), "quadrant": (quadrant, 4), "size": (size, 4)}
tr = make_objects(200, 32, config.seed); te = make_objects(100, 32, config.seed + 1_000_003)
A, B = attrs(*tr), attrs(*te)
torch.manual_seed(config.seed); init = make_student(config)
net = make_student(config); net.load_state_dict(torch.load(state))
for name, model in (("init", init), ("trained", net)):
    print(name, {k: round(knn_accuracy(model.backbone, (tr[0], A[k][0]), (te[0], B[k][0]), A[k][1]), 3) for k in A})
