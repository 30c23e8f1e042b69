"""Weighted cosine k-NN classification: how DINO's features are judged without training a classifier."""

import torch
import torch.nn.functional as F


@torch.no_grad()
def embed(backbone, images, batch_size=500):
    """ L2-normalised backbone features of images (N, 3, H, W) -> (N, C) """
    feats = [backbone(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(feats), dim=-1)


@torch.no_grad()
def knn_classify(train_feats, train_labels, test_feats, num_classes, k=20, temperature=0.07):
    """ labels voted by the k most cosine-similar train features, weighted by exp(sim / T); (N_test,) """
    sim = test_feats @ train_feats.T                                  # (N_test, N_train) cosines
    top_sim, top_idx = sim.topk(min(k, sim.shape[1]), dim=1)          # (N_test, k)
    votes = torch.zeros(len(test_feats), num_classes, device=sim.device, dtype=sim.dtype)
    votes.scatter_add_(1, train_labels[top_idx], torch.exp(top_sim / temperature))
    return votes.argmax(dim=1)


@torch.no_grad()
def knn_accuracy(backbone, train, test, num_classes, k=20, temperature=0.07):
    """ accuracy of k-NN on the test split, with the labelled train split as the memory bank """
    (x_train, y_train), (x_test, y_test) = train, test
    was_training = backbone.training
    backbone.eval()
    pred = knn_classify(embed(backbone, x_train), y_train, embed(backbone, x_test),
                        num_classes, k, temperature)
    backbone.train(was_training)
    return (pred == y_test).float().mean().item()
