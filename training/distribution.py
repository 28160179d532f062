"""Training on several devices and machines: the tf.distribute strategy of a run, the worker's
role in it, and how the PK batch is split across replicas.

    strategy = make_strategy("multi_worker")   # TF_CONFIG, else the Slurm step (srun)
    role = WorkerRole.of(strategy)              # role.is_chief, role.worker_index

The PK batch (``--identity_num_per_batch`` x ``--image_num_per_identity``) is the global batch:
replica r of R trains on identities ``[r*P/R, (r+1)*P/R)`` of each batch, all K images of each,
so every replica sees whole identities.
"""
import dataclasses
import os
import shutil

from training.config import OptionError

STRATEGIES = ("default", "mirrored", "multi_worker")
LEARNING_RATE_SCALINGS = ("none", "linear", "sqrt")


def cluster_resolver(port_base=8888, environ=None):
    """The cluster of a multi-worker run: ``TF_CONFIG`` if set, else the Slurm job step this
    process is a task of (``srun``), with ports ``port_base + task index on its node``."""
    from utils.tf_env import tf
    environ = os.environ if environ is None else environ
    if environ.get("TF_CONFIG"):
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if "SLURM_PROCID" in environ and "SLURM_STEP_NODELIST" in environ:
        if shutil.which("nvidia-smi"):  # how the resolver counts the GPUs it hands out
            return tf.distribute.cluster_resolver.SlurmClusterResolver(port_base=port_base)
        # Without GPUs the resolver would list no task at all (it pairs tasks with GPUs):
        # give it one pretend GPU per task and keep it from setting CUDA_VISIBLE_DEVICES.
        return tf.distribute.cluster_resolver.SlurmClusterResolver(
            port_base=port_base, gpus_per_node=1024, gpus_per_task=1, auto_set_gpu=False)
    raise OptionError(
        "--distribution_strategy multi_worker needs the cluster: set TF_CONFIG (one JSON per "
        "process: {\"cluster\": {\"worker\": [\"host:port\", ...]}, \"task\": {\"type\": "
        "\"worker\", \"index\": i}}) or start every worker with srun inside a Slurm job "
        "(scripts/slurm/train_multi_node.sbatch).")


def make_strategy(name="default", port_base=8888):
    """The ``tf.distribute`` strategy called ``name`` (one of `STRATEGIES`). Create it before
    any other TensorFlow work: a multi-worker strategy cannot start after devices are in use."""
    from utils.tf_env import tf
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=cluster_resolver(port_base))
    raise OptionError("--distribution_strategy must be one of {}, got {!r}.".format(
        ", ".join(STRATEGIES), name))


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """This process's place in the run: the chief writes the run folder; the others train."""
    worker_index: int = 0
    num_workers: int = 1
    num_replicas: int = 1

    @property
    def is_chief(self):
        return self.worker_index == 0

    @property
    def distributed(self):
        return self.num_replicas > 1 or self.num_workers > 1

    @classmethod
    def of(cls, strategy):
        resolver = getattr(strategy, "cluster_resolver", None)
        num_workers, index = 1, 0
        if resolver is not None and resolver.task_type is not None:
            cluster = resolver.cluster_spec().as_dict()
            # The chief is the "chief" task if there is one, else worker 0.
            order = [("chief", i) for i in range(len(cluster.get("chief", [])))] + [
                ("worker", i) for i in range(len(cluster.get("worker", [])))]
            num_workers = len(order)
            index = order.index((resolver.task_type, int(resolver.task_id)))
        return cls(worker_index=index, num_workers=num_workers,
                   num_replicas=strategy.num_replicas_in_sync)


def check_replica_split(identity_num_per_batch, num_replicas):
    """Refuses a P that the replicas cannot share by whole identities."""
    if identity_num_per_batch % num_replicas:
        raise OptionError(
            "--identity_num_per_batch {} cannot be split into whole identities over {} replicas "
            "(each replica trains on P / replicas identities, all K images of each): use a "
            "multiple of {}.".format(identity_num_per_batch, num_replicas, num_replicas))
    return identity_num_per_batch // num_replicas


def replica_rows(batch_size, num_replicas, replica_index):
    """The slice of a PK batch (identities in consecutive groups of K) for one replica."""
    rows = batch_size // num_replicas
    return slice(replica_index * rows, (replica_index + 1) * rows)


def learning_rate_factor(rule, batch_size, reference_batch_size):
    """The learning-rate scaling rule: 1 (``none``), ``B / B_ref`` (``linear``, Goyal et al.) or
    ``sqrt(B / B_ref)`` (``sqrt``), for the global batch B."""
    if rule == "none":
        return 1.0
    ratio = batch_size / float(reference_batch_size)
    if rule == "linear":
        return ratio
    if rule == "sqrt":
        return ratio ** 0.5
    raise OptionError("--learning_rate_scaling must be one of {}, got {!r}.".format(
        ", ".join(LEARNING_RATE_SCALINGS), rule))


def set_synchronized_batch_normalization(model, synchronized=True):
    """Makes every BatchNormalization layer of ``model`` compute its batch statistics over all
    replicas (synchronised BN; not fused). Returns their count."""
    from utils.tf_env import keras
    layers = [module for module in model.submodules
              if isinstance(module, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = bool(synchronized)
        if synchronized:
            layer.fused = False  # the fused kernel has no cross-replica statistics
    return len(layers)


def local_values(strategy, variable):
    """This process's first replica's value of a (possibly distributed) variable, read without a
    collective, so the chief can read it while the other workers train on."""
    return strategy.experimental_local_results(variable)[0].numpy()


def copy_local_weights(strategy, source, target):
    """Copies ``source``'s weights (a model built under ``strategy``) into ``target`` (the same
    architecture built outside it), by position, reading each replica-local value."""
    source_weights, target_weights = source.weights, target.weights
    if len(source_weights) != len(target_weights):
        raise ValueError("The models differ: {} and {} weights.".format(
            len(source_weights), len(target_weights)))
    values = []
    for source_weight, target_weight in zip(source_weights, target_weights):
        value = local_values(strategy, source_weight)
        if value.shape != tuple(target_weight.shape):
            raise ValueError("Weight {} has shape {}, its copy {} has {}.".format(
                source_weight.name, value.shape, target_weight.name, target_weight.shape))
        values.append(value)
    target.set_weights(values)
