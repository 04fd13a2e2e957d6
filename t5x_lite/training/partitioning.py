"""Device mesh and logical-axis rules: how parameters and activations are sharded.

Models name their axes (``embed``, ``mlp``, ``heads``, ``vocab``, ``batch`` ...);
a rules table maps each name onto a mesh axis (``data`` or ``model``) or leaves
it unsharded. Data parallelism, FSDP and tensor parallelism are rule changes,
not code changes:

- data parallel:   ``batch -> data``; parameters replicated.
- FSDP:            also ``embed -> data``: parameters and optimizer state are
                   split over the data axis and gathered per layer by XLA.
- tensor parallel: ``mlp, heads, vocab -> model`` on a mesh with ``model > 1``.

This is ``jax.jit`` with in/out shardings, JAX's successor to ``pmap``: one
program for every device count, the same on one CPU as on a pod.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from t5x_lite.errors import ConfigError

Rules = Sequence[tuple[str, Optional[str]]]

# Names used by t5x_lite's models. Anything unlisted is left unsharded.
BASE_RULES: tuple = (
    ("batch", "data"),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("embed", None),
    ("length", None),
    ("layers", None),
    ("relpos_buckets", None),
    ("token_types", None),
    ("abspos_buckets", None),
)


def rules_for(strategy: str = "data_parallel") -> tuple:
    """Standard rule tables: ``data_parallel`` (with tensor parallel when model > 1) or ``fsdp``."""
    if strategy == "data_parallel":
        return BASE_RULES
    if strategy == "fsdp":
        return tuple(("embed", "data") if name == "embed" else (name, axis) for name, axis in BASE_RULES)
    raise ConfigError(f"unknown partitioning strategy {strategy!r}; choose 'data_parallel' or 'fsdp'")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh shape: ``data`` x ``model`` devices; ``data=-1`` takes every device left over."""

    data: int = -1
    model: int = 1

    def shape(self, num_devices: int) -> tuple[int, int]:
        if self.model < 1 or num_devices % self.model:
            raise ConfigError(f"MeshConfig.model={self.model} does not divide the {num_devices} devices")
        data = num_devices // self.model if self.data == -1 else self.data
        if data * self.model != num_devices:
            raise ConfigError(f"MeshConfig data={data} x model={self.model} != {num_devices} devices")
        return data, self.model


def make_mesh(config: MeshConfig = MeshConfig(), devices: Optional[Sequence[Any]] = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    data, model = config.shape(len(devices))
    return Mesh(np.asarray(devices).reshape(data, model), ("data", "model"))


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Mesh + rules for tracing: the models' logical activation constraints take effect inside."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
        yield


def param_shardings(abstract_boxed: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a tree whose leaves carry logical names (``nn.Partitioned``)."""
    specs = nn.get_partition_spec(abstract_boxed)
    return nn.logical_to_mesh_sharding(specs, mesh, tuple(rules))


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
    """Leading (batch) axis over whatever ``batch`` maps to; the rest replicated."""
    axis = dict(rules).get("batch")
    return NamedSharding(mesh, PartitionSpec(axis))


def _batch_axes(rules: Rules) -> tuple[str, ...]:
    """The mesh axes the rules put the batch on (none, one, or several)."""
    axis = dict(rules).get("batch")
    return () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)


def batch_shards(mesh: Mesh, rules: Rules) -> int:
    """How many pieces the batch axis is split into: a global batch must divide by it."""
    unknown = [a for a in _batch_axes(rules) if a not in mesh.shape]
    if unknown:
        raise ConfigError(f"logical_axis_rules map 'batch' to mesh axis {unknown[0]!r}; the mesh has "
                          f"{tuple(mesh.shape)}")
    return leading_axis_split(batch_sharding(mesh, rules))


def leading_axis_split(sharding: NamedSharding) -> int:
    """How many pieces ``sharding`` splits an array's leading axis into."""
    axes = sharding.spec[0] if len(sharding.spec) else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    return int(np.prod([sharding.mesh.shape[a] for a in axes], dtype=np.int64))


def data_shard(mesh: Mesh, rules: Rules, process_index: Optional[int] = None) -> tuple[int, int]:
    """``(index, count)``: this process feeds slice ``index`` of the ``count`` equal, contiguous slices of every
    global batch (its rows, ``host_batch_to_global``), as ``data.pipeline.get_dataset``'s ``shard``.

    Usually one slice per process. Processes whose devices hold the same rows (a ``model`` axis spanning
    hosts: tensor parallelism over hosts) share a slice and read the same examples. A mesh where a process's
    devices hold rows that are not one such slice (rows in two places, or overlapping another process's) is
    refused: each process would have to feed rows it does not hold.
    """
    process_index = jax.process_index() if process_index is None else process_index
    batch_axes = _batch_axes(rules)
    names = list(mesh.axis_names)
    devices = np.asarray(mesh.devices)
    sizes = [devices.shape[names.index(a)] for a in batch_axes]
    blocks: dict[int, set] = {}  # process -> the batch blocks (row slices) its devices hold
    for position, device in np.ndenumerate(devices):
        block = int(np.ravel_multi_index([position[names.index(a)] for a in batch_axes], sizes)) if sizes else 0
        blocks.setdefault(device.process_index, set()).add(block)
    per = {len(b) for b in blocks.values()}
    for process, held in sorted(blocks.items()):
        k = len(held)
        if len(per) > 1 or max(held) - min(held) + 1 != k or min(held) % k:
            raise ConfigError(
                f"the mesh {dict(mesh.shape)} gives process {process} the batch slices {sorted(held)} of "
                f"{int(np.prod(sizes, dtype=np.int64))} (each process's devices must hold one contiguous run of "
                "rows, the same length for every process): order the devices so that each process's lie "
                "together along the batch's axes")
    k = per.pop()
    count = int(np.prod(sizes, dtype=np.int64)) // k
    if process_index not in blocks:
        raise ConfigError(f"process {process_index} has no device in the mesh {dict(mesh.shape)}")
    return min(blocks[process_index]) // k, count


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _global_shape(host_shape: tuple, slices: int) -> tuple:
    return (host_shape[0] * slices,) + tuple(host_shape[1:])


def host_batch_to_global(batch: dict, mesh: Mesh, sharding: NamedSharding, slices: Optional[int] = None) -> dict:
    """This host's rows (slice ``i`` of ``slices``, ``data_shard``) -> global jax.Arrays laid out by ``sharding``
    (1 or many hosts; hosts that share a slice pass the same rows)."""
    slices = jax.process_count() if slices is None else slices

    def to_global(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, _global_shape(x.shape, slices))

    return {k: to_global(v) for k, v in batch.items()}


def abstract_global_batch(batch: dict, sharding: NamedSharding, slices: Optional[int] = None) -> dict:
    """The shapes, dtypes and sharding ``host_batch_to_global`` gives this host's rows, without the data."""
    slices = jax.process_count() if slices is None else slices

    def abstract(x):
        x = x if hasattr(x, "dtype") else np.asarray(x)
        return jax.ShapeDtypeStruct(_global_shape(x.shape, slices), jax.dtypes.canonicalize_dtype(x.dtype),
                                    sharding=sharding)

    return {k: abstract(v) for k, v in batch.items()}
