import torch

from inference.compat import box_iou, ensure_torchvision_nms, nms


def reference_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep = []
    for i in order:
        if all(float(box_iou(boxes[i:i + 1], boxes[j:j + 1])[0, 0]) <= thr for j in keep):
            keep.append(i)
    return keep


def test_pure_torch_nms_matches_the_greedy_definition():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 100
    wh = torch.rand(60, 2, generator=g) * 40 + 5
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(60, generator=g)
    for thr in (0.3, 0.5, 0.7):
        assert nms(boxes, scores, thr).tolist() == reference_nms(boxes, scores, thr)


def test_nms_of_nothing_is_empty():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_torchvision_nms_works_after_ensure():
    mode = ensure_torchvision_nms()
    assert mode in ("native", "pure-torch")
    import torchvision

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == [0, 2]
