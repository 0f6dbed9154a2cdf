"""`evaluate(..., distributed=...)` on 2 gloo ranks: each rank runs the feature net on its share of the batches,
the features are gathered in order, and the metrics equal one process's."""
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from argen.metrics.evaluator import evaluate, extract_features
from argen.metrics.features.base import FeatureNet
from argen.train import DDP


class Pooled(FeatureNet):
    """A fixed random projection of 4x4-pooled pixels: cheap, deterministic, counts its calls."""

    name, dim, resize = "pooled-test", 6, "none"

    def __init__(self):
        super().__init__()
        self.register_buffer("proj", torch.randn(48, 6, generator=torch.Generator().manual_seed(0)))
        self.calls = 0

    def extract(self, images):
        self.calls += len(images)
        x = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)  # (B, 3*4*4)
        return x @ self.proj


def images(n, seed):
    return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _worker(rank, world, store, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        strategy = DDP()
        strategy.setup(torch.device("cpu"))
        net = Pooled()
        result = evaluate(images(30, 1), reference=images(34, 2), features=net, batch_size=4, kid_subsets=5,
                          kid_subset_size=10, stats_cache=False, distributed=strategy,
                          out=Path(out) / "result.json")
        feats = extract_features(net, images(9, 3).split(2), distributed=strategy)
        torch.save({"metrics": result["metrics"], "calls": net.calls, "feats": torch.from_numpy(feats)},
                   Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_split_the_features_and_agree_with_one_process(tmp_path, one_thread):
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    net = Pooled()
    ref = evaluate(images(30, 1), reference=images(34, 2), features=net, batch_size=4, kid_subsets=5,
                   kid_subset_size=10, stats_cache=False)
    ref_feats = extract_features(Pooled(), images(9, 3).split(2))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for got in ranks:
        assert got["metrics"] == ref["metrics"]  # identical features -> identical numbers
        assert torch.equal(got["feats"], torch.from_numpy(ref_feats))
    assert ranks[0]["calls"] + ranks[1]["calls"] == net.calls + 9  # the work was split, not repeated
    assert 0 < ranks[1]["calls"] < net.calls
    assert (tmp_path / "result.json").is_file()  # written once, by rank 0
