"""Peer run on the same hour: torchreid trains OSNet from scratch on Market-1501 within a wall-clock budget.

    /work/peer_venv/bin/python benchmarks/peer_torchreid_budget.py --root_folder_path ../shared/datasets \\
        [--minutes 60] [--model osnet_x0_25 | osnet_x1_0] [--threads 2] [--workers 2] \\
        [--softmax_only_epochs 10] [--weight_t 1] [--output_folder_path DIR]

Writes results.jsonl, history.jsonl (one line per epoch) and model.pth (the final state_dict) to
--output_folder_path (default output/peer_torchreid_budget/<model>_<minutes>min, after the budget).

Install (benchmark-only dependencies, never in requirements.txt; a separate venv):

    python -m venv /work/peer_venv && /work/peer_venv/bin/pip install -r benchmarks/requirements-peer.txt

The counterpart of benchmarks/market1501_budget.py (this toolkit's MobileNetV3Small recipe) on another
system: torchreid (PyPI ``torchreid`` 0.2.5, "Torchreid-Pip", which packages KaiyangZhou/deep-person-reid
1.4.0 as ``torchreid.reid``) on PyTorch's CPU kernels, the same Market-1501 (751 training identities,
12,936 images; 3,368 queries against 15,913 gallery images, junk -1 dropped, distractors 0 kept), the same
128x64 input, the same wall budget counted the same way: from the start of this script (imports,
dataset listing, model building, training and the final evaluation on the full query/gallery all
inside it) to the printed result. Progress goes to stderr; one JSON line goes to stdout at the end,
with market1501_budget.py's keys (mAP, rank-1, rank-5, mINP in percent, minutes, epochs,
train_images_per_second averaged over the epochs after the first, backbone, image_size,
flip_in_evaluation, re_ranking, non_default_flags, extra_flags, config) plus the peer's own (system,
torch, engine, rank_evaluation, threads, workers, budget_minutes, ...).

Engine: torchreid's own pieces throughout. ``torchreid.data.ImageDataManager`` (its Market1501 class,
its transforms, its RandomIdentitySampler), ``torchreid.models.build_model(name, num_classes,
loss='triplet', pretrained=False)``, ``torchreid.optim.build_optimizer`` and
``torchreid.engine.ImageTripletEngine``, whose ``train()`` runs every training epoch (its
forward_backward: torchreid's TripletLoss and label-smoothed CrossEntropyLoss, AMSGrad step). It runs
unchanged on the current PyTorch (CPU). Only ``Engine.run()`` is not used, because it needs the epoch
count up front and this budget fixes wall time: the epoch loop, the learning-rate schedule fitted to the
budget and the final evaluation are in this script ("engine" in the JSON line says so). The final
evaluation is torchreid's test path written out: features of the model in eval mode,
``metrics.compute_distance_matrix(..., 'euclidean')`` and ``metrics.evaluate_rank`` (CMC, mAP). This
torchreid returns no mINP, so the script computes it on the same distance matrix under the same rules
(per query, gallery images of the same identity and camera removed; INP = number of true matches /
1-based position of the last one, averaged over the queries with a match), as this repository's
metrics do. torchreid 0.2.5 ships no Cython source for its rank code (rank_cylib holds only setup.py),
so ``evaluate_rank`` runs its Python implementation ("rank_evaluation" in the JSON line).

Recipe (torchreid's recommendations; file names in KaiyangZhou/deep-person-reid):

* Model ``osnet_x0_25`` (``--model``; ``osnet_x1_0`` too), random initialisation (``pretrained=False``):
  from scratch, like this toolkit's budget run.
* Input 128x64 (Market's native size; the configs use 256x128), ImageNet mean / std
  (scripts/default_config.py: data.norm_mean / norm_std).
* Transforms ``random_flip`` + ``random_crop`` (Random2DTranslation: enlarge 1/8 and crop back, p 0.5):
  the transforms of the from-scratch model of docs/MODEL_ZOO.md (hacnn*; the OSNet configs, which start
  from ImageNet weights, use ``random_flip`` alone).
* Softmax + triplet: ``ImageTripletEngine``'s defaults margin 0.3, weight_t 1, weight_x 1, label
  smoothing on (torchreid/engine/image/triplet.py; losses.CrossEntropyLoss eps 0.1); the identity
  sampler that engine needs, ``RandomIdentitySampler`` with 4 instances (scripts/default_config.py:
  sampler.num_instances; docs/user_guide.rst "for triplet loss"), batch 64 = 16 identities x 4 (the
  OSNet configs' batch size; the same 16x4 as this toolkit's recipe).
* AMSGrad, learning rate 0.0015, cosine schedule (configs/im_osnet_x1_0_softmax_256x128_amsgrad_cosine.yaml;
  osnet_x0_25's own config uses 0.003 for batch 128, the same ratio), weight decay 5e-4 and Adam betas
  0.9 / 0.999 (scripts/default_config.py).
* One departure, for from scratch: the first 10 epochs train the softmax loss alone
  (``--softmax_only_epochs 10``; the configs' ``fixbase_epoch: 10``, whose softmax-only classifier
  warm-up on a frozen ImageNet backbone has nothing to freeze here). With the triplet loss on from the
  first step (``--softmax_only_epochs 0``) the features collapse within the first epoch, whatever the
  weights tried: the triplet loss settles at the margin (0.30), the softmax loss stays at ln 751 (6.6),
  and the eval-mode features (fc + BN + ReLU) are all zero. Measured with this script and its losses
  (osnet_x0_25, 16x4, seed 0): weight_t 1 at lr 0.0015 (a 12-minute run: 8 epochs, 0.14 mAP, rank-1
  0.0), weight_t 0.5 at 0.0015, weight_t 1 at 0.0003 (slower, same direction), and weight_t 1 switched on
  after 3 softmax-only epochs. After 10 softmax-only epochs (softmax loss near 3.9), switching the
  triplet loss on at the peak rate 0.0015 trains normally (triplet loss 1.9 falling to 0.9 over 300
  steps, softmax loss still falling). The same collapse is reported by torchreid's users for
  triplet-loss training (KaiyangZhou/deep-person-reid issues 240, 357: "the triplet loss is always
  equals to margin"). ``--weight_t 0`` gives torchreid's softmax recipe of its OSNet configs.
* Evaluation: euclidean distance on the raw features (test.dist_metric, normalize_feature False), no
  re-ranking, no flip (torchreid's defaults).

Budget rule. The cosine is torchreid's (CosineAnnealingLR, stepped once per epoch, eta_min 0: epoch e of
E trains at lr * (1 + cos(pi e / E)) / 2, lr 0.0015) with E fitted to the budget: before training, the
script times feature extraction on 600 query images after a warm-up batch (loading included) and the ranking code
on 150 queries of a random distance matrix, and reserves 1.25x the extrapolated full evaluation plus
30 s. The first epoch always runs (at the peak rate, whatever E is). After every epoch,
E = epochs done + floor((budget - elapsed - reserve) / epoch time), the epoch time being the larger of
the last epoch's and the mean over the epochs after the first; training stops when no further epoch fits,
and the final evaluation runs then, inside the budget.
"""
import time

START = time.time()  # the budget clock: everything below, imports included, counts

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

REPOSITORY_PATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(REPOSITORY_PATH)  # last: the repository's top-level packages shadow nothing
from utils.machine import cpu_description  # noqa: E402  (plain Python, no TensorFlow)

DATASET_FOLDER = "Market-1501-v15.09.15"
DATASET_KEY = "market1501_budget"  # this script's registration of torchreid's Market1501 class
RECIPE = dict(weight_decay=5e-4, adam_betas=(0.9, 0.999), margin=0.3, label_smooth=True,
              transforms=["random_flip", "random_crop"])
EVALUATION_SAFETY_FACTOR = 1.25
EVALUATION_SAFETY_SECONDS = 30.0
RANKING_PROBE_QUERIES = 150
PROBE_IMAGES = 600


def log(*values):
    print(*values, file=sys.stderr, flush=True)


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root_folder_path", default=os.path.join(REPOSITORY_PATH, "..", "shared",
                                                                   "datasets"),
                        help="Folder holding Market-1501-v15.09.15 (default: ../shared/datasets "
                             "relative to the repository).")
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="Wall-clock budget, final evaluation included.")
    parser.add_argument("--model", default="osnet_x0_25",
                        help="torchreid model name, e.g. osnet_x0_25 or osnet_x1_0.")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=64,
                        help="Training batch (identities x --num_instances).")
    parser.add_argument("--test_batch_size", type=int, default=100,
                        help="Evaluation batch (scripts/default_config.py: test.batch_size).")
    parser.add_argument("--num_instances", type=int, default=4,
                        help="Images per identity in a batch (RandomIdentitySampler).")
    parser.add_argument("--learning_rate", type=float, default=0.0015,
                        help="AMSGrad peak learning rate (cosine to 0 at the fitted last epoch).")
    parser.add_argument("--weight_t", type=float, default=1.0,
                        help="Triplet loss weight (ImageTripletEngine's default 1; 0 = softmax only).")
    parser.add_argument("--weight_x", type=float, default=1.0,
                        help="Softmax (label-smoothed cross-entropy) weight (default 1).")
    parser.add_argument("--softmax_only_epochs", type=int, default=10,
                        help="Epochs trained with the softmax loss alone before the triplet loss "
                             "joins (from scratch, the triplet loss collapses the features if it "
                             "is on from the start; see the docstring).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch.set_num_threads (default: the machine's cores).")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes.")
    parser.add_argument("--print_freq", type=int, default=50,
                        help="torchreid's per-batch progress line every N batches (stderr).")
    parser.add_argument("--output_folder_path", default=None,
                        help="Where results.jsonl, history.jsonl and the final weights go "
                             "(default: output/peer_torchreid_budget/<model>_<minutes>min).")
    return parser, parser.parse_args()


def mean_inverse_negative_penalty(distmat, q_pids, g_pids, q_camids, g_camids, chunk=256):
    """mINP under torchreid's Market-1501 rules: per query, gallery images of the same identity and
    camera are removed; INP = true matches / 1-based position of the last one (a non-match at exactly
    the same distance counts as ranked before it); queries without a true match are skipped."""
    import numpy as np
    values = []
    for begin in range(0, distmat.shape[0], chunk):
        distances = distmat[begin:begin + chunk]
        same_pid = g_pids[None, :] == q_pids[begin:begin + chunk, None]
        keep = ~(same_pid & (g_camids[None, :] == q_camids[begin:begin + chunk, None]))
        matches = same_pid & keep
        count = matches.sum(1)
        valid = count > 0
        farthest = np.where(matches, distances, -np.inf).max(1)
        last_position = (keep & (distances <= farthest[:, None])).sum(1)
        values.append(count[valid] / last_position[valid])
    return float(np.mean(np.concatenate(values)))


def rank(distmat, q_pids, g_pids, q_camids, g_camids):
    from torchreid.reid import metrics
    cmc, mean_ap = metrics.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids,
                                         use_metric_cuhk03=False)
    minp = mean_inverse_negative_penalty(distmat, q_pids, g_pids, q_camids, g_camids)
    return cmc, float(mean_ap), minp


def extract_features(model, loader):
    import numpy as np
    import torch
    model.eval()
    features, pids, camids = [], [], []
    with torch.no_grad():
        for data in loader:
            features.append(model(data["img"]).cpu())
            pids.extend(data["pid"].tolist())
            camids.extend(data["camid"].tolist())
    return torch.cat(features, 0), np.asarray(pids), np.asarray(camids)


def estimate_evaluation_seconds(model, datamanager):
    """Seconds the final evaluation will take, measured on this machine before training."""
    import numpy as np
    import torch
    loaders = datamanager.test_loader[DATASET_KEY]
    num_query = len(loaders["query"].dataset)
    num_gallery = len(loaders["gallery"].dataset)
    model.eval()
    images, start = 0, None
    with torch.no_grad():
        for data in loaders["query"]:
            model(data["img"])
            if start is None:  # the first batch (worker start, warm-up) is not timed
                start = time.time()
                continue
            images += len(data["img"])
            if images >= PROBE_IMAGES:
                break
    extraction_seconds = (time.time() - start) / images * (num_query + num_gallery)
    # Ranking: torchreid's Python evaluate_rank + mINP on random distances, real identities.
    query = datamanager.test_dataset[DATASET_KEY]["query"]
    gallery = datamanager.test_dataset[DATASET_KEY]["gallery"]
    g_pids = np.asarray([item[1] for item in gallery])
    g_camids = np.asarray([item[2] for item in gallery])
    picked = np.linspace(0, len(query) - 1, RANKING_PROBE_QUERIES).astype(int)
    q_pids = np.asarray([query[i][1] for i in picked])
    q_camids = np.asarray([query[i][2] for i in picked])
    distmat = np.random.RandomState(0).rand(len(picked), len(gallery)).astype(np.float32)
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rank(distmat, q_pids, g_pids, q_camids, g_camids)
    ranking_seconds = (time.time() - start) / len(picked) * num_query
    return extraction_seconds, ranking_seconds


def cosine_learning_rate(peak, epoch, planned_epochs):
    """torchreid's 'cosine' (CosineAnnealingLR, T_max = planned epochs, eta_min 0) at ``epoch``."""
    if not planned_epochs:
        return peak
    return peak * (1 + math.cos(math.pi * epoch / planned_epochs)) / 2


def main():
    parser, arguments = parse_arguments()
    root = os.path.abspath(arguments.root_folder_path)
    if not os.path.isdir(os.path.join(root, DATASET_FOLDER)):
        sys.exit("--root_folder_path {!r} does not hold {}.".format(root, DATASET_FOLDER))
    if arguments.batch_size % arguments.num_instances:
        sys.exit("--batch_size must be a multiple of --num_instances.")
    output = arguments.output_folder_path or os.path.join(
        REPOSITORY_PATH, "output", "peer_torchreid_budget",
        "{}_{:g}min".format(arguments.model, arguments.minutes))
    if os.path.exists(output):
        sys.exit("{} exists; pass another --output_folder_path.".format(output))
    budget_seconds = 60 * arguments.minutes

    # torchreid prints its progress to stdout: send it to stderr, stdout carries the JSON line only.
    with contextlib.redirect_stdout(sys.stderr):
        import numpy as np
        import torch
        torch.set_num_threads(arguments.threads)
        import torchreid  # warns on stderr that its Cython evaluation is unavailable
        from torchreid.reid import metrics
        cython_evaluation = metrics.rank.IS_CYTHON_AVAI
        from torchreid.reid.data.datasets.image.market1501 import Market1501
        from torchreid.reid.engine import ImageTripletEngine
        torchreid.reid.utils.set_random_seed(arguments.seed)

        class Market1501InRoot(Market1501):
            """torchreid's Market1501 (its file listing and junk rule) reading
            ``<root>/Market-1501-v15.09.15`` instead of ``<root>/market1501/...``."""
            dataset_dir = ""

        torchreid.reid.data.register_image_dataset(DATASET_KEY, Market1501InRoot)
        datamanager = torchreid.reid.data.ImageDataManager(
            root=root, sources=DATASET_KEY, targets=DATASET_KEY,
            height=arguments.height, width=arguments.width, transforms=RECIPE["transforms"],
            batch_size_train=arguments.batch_size, batch_size_test=arguments.test_batch_size,
            workers=arguments.workers, num_instances=arguments.num_instances,
            train_sampler="RandomIdentitySampler", use_gpu=False)
        model = torchreid.reid.models.build_model(
            name=arguments.model, num_classes=datamanager.num_train_pids, loss="triplet",
            pretrained=False, use_gpu=False)
        optimizer = torchreid.reid.optim.build_optimizer(
            model, optim="amsgrad", lr=arguments.learning_rate,
            weight_decay=RECIPE["weight_decay"], adam_beta1=RECIPE["adam_betas"][0],
            adam_beta2=RECIPE["adam_betas"][1])

        class BudgetTripletEngine(ImageTripletEngine):
            """ImageTripletEngine, unchanged, that also keeps each batch's loss summary."""

            def forward_backward(self, data):
                summary = super().forward_backward(data)
                self.epoch_summaries.append(summary)
                return summary

        engine = BudgetTripletEngine(
            datamanager, model, optimizer, margin=RECIPE["margin"], weight_t=arguments.weight_t,
            weight_x=arguments.weight_x, scheduler=None, use_gpu=False,
            label_smooth=RECIPE["label_smooth"])

        extraction_seconds, ranking_seconds = estimate_evaluation_seconds(model, datamanager)
        reserve = (EVALUATION_SAFETY_FACTOR * (extraction_seconds + ranking_seconds)
                   + EVALUATION_SAFETY_SECONDS)
        log("[budget] {:.1f} s used before training; evaluation estimated at {:.0f} s extraction + "
            "{:.0f} s ranking, {:.0f} s reserved".format(time.time() - START, extraction_seconds,
                                                        ranking_seconds, reserve))

        history, planned, epoch = [], None, 0
        while True:
            learning_rate = cosine_learning_rate(arguments.learning_rate, epoch, planned)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            # Softmax alone for the first --softmax_only_epochs epochs, then softmax + triplet.
            engine.weight_t = 0.0 if epoch < arguments.softmax_only_epochs else arguments.weight_t
            engine.epoch, engine.max_epoch = epoch, planned or 1
            engine.epoch_summaries = []
            epoch_start = time.time()
            engine.train(print_freq=arguments.print_freq)
            epoch_seconds = time.time() - epoch_start
            images = len(engine.epoch_summaries) * arguments.batch_size
            losses = {key: float(np.mean([summary[key] for summary in engine.epoch_summaries]))
                      for key in engine.epoch_summaries[0]}
            history.append(dict(epoch=epoch + 1, learning_rate=learning_rate, weight_t=engine.weight_t,
                                seconds=epoch_seconds,
                                images=images, train_images_per_second=images / epoch_seconds,
                                elapsed_seconds=time.time() - START, **losses))
            epoch += 1
            later = [row["seconds"] for row in history[1:]] or [epoch_seconds]
            epoch_estimate = max(epoch_seconds, sum(later) / len(later))
            remaining = budget_seconds - (time.time() - START) - reserve
            planned = epoch + max(0, int(remaining // epoch_estimate))
            log("[epoch {}/{}] {} lr {:.2e} {:.1f} images/s ({:.0f} s), elapsed {:.1f} min".format(
                epoch, planned, " ".join("{} {:.4f}".format(key, value)
                                         for key, value in losses.items()),
                learning_rate, images / epoch_seconds, epoch_seconds,
                (time.time() - START) / 60))
            if planned <= epoch:
                break

        evaluation_start = time.time()
        loaders = datamanager.test_loader[DATASET_KEY]
        qf, q_pids, q_camids = extract_features(model, loaders["query"])
        gf, g_pids, g_camids = extract_features(model, loaders["gallery"])
        extracted = time.time()
        distmat = metrics.compute_distance_matrix(qf, gf, "euclidean").numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cmc, mean_ap, minp = rank(distmat, q_pids, g_pids, q_camids, g_camids)
        minutes = (time.time() - START) / 60
        log("[evaluation] {} queries x {} gallery: extraction {:.0f} s, ranking {:.0f} s (estimated "
            "{:.0f} + {:.0f}); mAP {:.2f} rank-1 {:.2f} mINP {:.2f}; {:.2f} of {:g} minutes".format(
                len(q_pids), len(g_pids), extracted - evaluation_start, time.time() - extracted,
                extraction_seconds, ranking_seconds, 100 * mean_ap, 100 * cmc[0], 100 * minp,
                minutes, arguments.minutes))

    speeds = [row["train_images_per_second"] for row in history]
    speeds = speeds[1:] or speeds
    defaults = vars(parser.parse_args([]))
    changed = {name: value for name, value in vars(arguments).items()
               if name not in ("root_folder_path", "output_folder_path", "minutes", "threads")
               and defaults[name] != value}
    line = {
        "mAP": round(100 * mean_ap, 2), "rank-1": round(100 * float(cmc[0]), 2),
        "rank-5": round(100 * float(cmc[4]), 2), "mINP": round(100 * minp, 2),
        "minutes": round(minutes, 2), "epochs": len(history),
        "train_images_per_second": round(sum(speeds) / len(speeds), 1),
        "backbone": arguments.model,
        "image_size": "{}x{}".format(arguments.height, arguments.width),
        "flip_in_evaluation": False, "re_ranking": False,
        "non_default_flags": changed, "extra_flags": [],
        "config": "torchreid_softmax_triplet" if arguments.weight_t > 0 else "torchreid_softmax",
        "system": "torchreid {}".format(torchreid.__version__),
        "torch": torch.__version__,
        "engine": "torchreid ImageTripletEngine.train per epoch; epoch loop, budget-fitted cosine "
                  "and final evaluation in this script",
        "rank_evaluation": "torchreid evaluate_rank ({}); mINP by this script".format(
            "Cython" if cython_evaluation else "Python: no Cython source in torchreid 0.2.5"),
        "budget_minutes": arguments.minutes, "threads": arguments.threads,
        "workers": arguments.workers, "batch_size": arguments.batch_size,
        "num_instances": arguments.num_instances, "learning_rate": arguments.learning_rate,
        "weight_t": arguments.weight_t, "weight_x": arguments.weight_x,
        "softmax_only_epochs": min(arguments.softmax_only_epochs, len(history)),
        "last_learning_rate": history[-1]["learning_rate"],
        "evaluation_minutes": round((time.time() - evaluation_start) / 60, 2),
        "cpu": cpu_description(),
    }
    os.makedirs(output)
    with open(os.path.join(output, "history.jsonl"), "w") as file:
        file.writelines(json.dumps(row) + "\n" for row in history)
    with open(os.path.join(output, "results.jsonl"), "w") as file:
        file.write(json.dumps(line) + "\n")
    torch.save(model.state_dict(), os.path.join(output, "model.pth"))
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
