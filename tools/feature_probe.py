"""What a teacher kept by `attention_attempt.py --keep-teacher` encodes: k-NN accuracy (1000 train
images as memory, 500 others as queries) on the shape and on nuisances read off the images and
masks: the object's hue (its strongest channel, 3 classes), the background's brightness (quartile,
4), the quadrant of the object's centroid (4), its area (quartile, 4); for the trained teacher and
the same network at init.

    python tools/feature_probe.py OUT.pt -- <the attempt's trainer flags>
"""
import sys

import torch
from dino_ref.train import parse_args, make_student
from dino_ref.train.objects import make_objects
from dino_ref.train.knn import knn_accuracy


def quartile(v):
    return torch.bucketize(v, torch.quantile(v, torch.tensor([0.25, 0.5, 0.75])))


def attributes(x, m, y):
    """ {name: (labels, number of classes)} read off images x, masks m and shape labels y """
    area = m.float().mean((1, 2))
    inside = (x * m.unsqueeze(1)).sum((2, 3)) / m.sum((1, 2)).unsqueeze(1)          # (N, 3)
    outside = (x * ~m.unsqueeze(1)).sum((2, 3)) / (~m).sum((1, 2)).unsqueeze(1)
    ys, xs = torch.meshgrid(torch.arange(32.), torch.arange(32.), indexing="ij")
    cy, cx = (m * ys).sum((1, 2)) / m.sum((1, 2)), (m * xs).sum((1, 2)) / m.sum((1, 2))
    return {"shape": (y, 5), "hue": (inside.argmax(1), 3), "background brightness": (quartile(outside.mean(1)), 4),
            "quadrant": ((cy > 16).long() * 2 + (cx > 16).long(), 4), "size": (quartile(area), 4)}


def main(state, argv):
    torch.set_num_threads(1)
    config = parse_args(argv)
    train, test = make_objects(200, 32, config.seed), make_objects(100, 32, config.seed + 1_000_003)
    a, b = attributes(*train), attributes(*test)
    torch.manual_seed(config.seed)
    init = make_student(config)
    net = make_student(config)
    net.load_state_dict(torch.load(state, weights_only=True))
    for name, model in (("init", init), ("trained", net)):
        print(name, {k: round(knn_accuracy(model.backbone, (train[0], a[k][0]), (test[0], b[k][0]), a[k][1]), 3)
                     for k in a})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[sys.argv.index("--") + 1:])
