"""``gmn``: a graph metanetwork that reads each INR as its parameter graph.

The parameter graph of an MLP with widths ``d_0 .. d_L`` has a node per neuron and an edge per
weight (``W_l[o, i]`` joins neuron ``i`` of layer ``l`` to neuron ``o`` of layer ``l + 1``). Edge
features start from the weight value, node features from the bias (input neurons have none).
Learned encodings break exactly the symmetries that do not hold: every input neuron and every
output neuron has its own encoding, while the hidden neurons of a layer share one (they may be
permuted freely), and every edge carries its layer's encoding.

Each message-passing layer updates edges and nodes (in the spirit of Lim et al. 2024, "Graph
metanetworks", and Kofinas et al. 2024, "Graph neural networks for learning equivariant
representations of neural networks")::

    z_ij = act(A e_ij + S h_j + T h_i)           edge hidden, for the edge j -> i (pre-normed e, h)
    h_i <- h_i + U act(H h_i + F agg_{j -> i} z_ji + K agg_{i -> k} z_ik)
    e_ij <- e_ij + Z z_ij

with ``agg`` a sum (``aggr=sum``, the default) or mean over the edges into or out of a neuron,
so a node hears both the layer before it (forward) and the layer after it (backward). With
``probes=K`` a node also starts from its neuron's values at K learned input points, shared by all
INRs (NG-GNN's probe features): hidden neurons bring their sines there, output neurons the image. The
readout pools per symmetry orbit: each input and output neuron is kept, hidden neurons are
averaged per layer and edges per layer; the pooled vector after every layer is a representation.

All INRs of a spec share one graph, so the default ``impl=dense`` runs everything as batched
tensors: ``(nodes, B, d)`` and ``(edges, B, d)``, where each layer's edges are viewed as
``(out, in, B, d)`` and aggregation is a reduction over one axis (no scatter, hence deterministic
on CUDA). ``impl=pyg`` runs the same parameters as a plain torch_geometric ``MessagePassing`` over a
``Batch`` of graphs; it is the reference the dense path is tested against.

Inputs are normalised per layer (weights and biases separately) with statistics of the training
split (``weight_norm=per-layer``; without it metanetworks on SIRENs train at chance). SIRENs have
more symmetries than neuron permutations: sine is odd and periodic, so negating a hidden neuron's
incoming weights and bias and its outgoing weights, or shifting its phase ``w0 * b`` by pi while
negating its outgoing weights, leaves the INR unchanged. ``canon=phase`` (the default) maps every
INR to the representative whose hidden phases lie in ``[0, pi/2]`` (as ScaleGMN's phase
canonicalisation does), ``canon=sign`` only makes hidden biases non-negative, ``canon=none`` keeps
the weights as fitted. Either way the map is per neuron, so it commutes with permutations. The graph,
the statistics and the canonical forms are the harness's (``wsbench.ParamGraph``, ``layer_statistics``,
``canonical_phases``, ``canonical_signs``); this module is the model.

Zoos of other networks (``TaskInfo.inr`` None, e.g. the CNN zoos): the model reads the parameter graph
of the zoo's layout (``ParamGraph.for_network``): a node per input channel, per conv output channel
and per dense neuron, an edge per (input channel, output channel) pair whose features are the whole
kernel (zero-padded, with a conv/dense flag; ``edge_in`` is then ``Linear(F + 1, d)``), biases as node
features, and global average pooling wired as direct edges from the last conv layer's channels to the
dense neurons. Everything else (the encodings, message passing, readout, normalisation) is the same
model; the SIREN-only options (``canon``, ``probes``, affine augmentation) must be off there
(``canon=none``, ``probes=0``, the defaults of the ``cnn-*`` datasets).

Zoos of mixed architectures (``TaskInfo.network`` a ``MixedNetworks``, the ``cnn-*-mixed`` datasets):
:class:`MixedGMN` gives every distinct layout its own parameter graph (built once) and joins a batch's
graphs, of different sizes, into one torch_geometric graph that the same :class:`GMNLayer` stack
reads (``impl=pyg``). What would depend on depth goes by layer role instead (``wsbench.layer_roles``:
first, middle, last, output): hidden channels are encoded and pooled by the role of the layer they
are outputs of, edges by their layer's role, and the inputs are normalised with statistics pooled per
role over every layout (``wsbench.role_statistics``), so the readout has the same size at every
depth and width.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from wsbench import (
    LAYER_ROLES,
    ArchitectureSpec,
    Head,
    MixedNetworks,
    Param,
    ParamGraph,
    SirenSpec,
    WsbenchError,
    canonical_phases,
    canonical_signs,
    compile_fn,
    hookimpl,
    layer_roles,
    layer_statistics,
    role_statistics,
    unflatten,
)


def group_means(h: torch.Tensor, e: torch.Tensor, node_key: torch.Tensor, edge_key: torch.Tensor, b: int,
                node_groups: int, edge_groups: int) -> torch.Tensor:
    """Per-network, per-group means of node features ``h (n, d)`` and edge features ``e (m, d)``, whose
    keys are ``network * groups + group``: ``(B, (node_groups + edge_groups) * d)``, node groups first."""
    pn = scatter(h, node_key, 0, dim_size=b * node_groups, reduce="mean").view(b, node_groups, -1)
    pe = scatter(e, edge_key, 0, dim_size=b * edge_groups, reduce="mean").view(b, edge_groups, -1)
    return torch.cat([pn, pe], 1).flatten(1)


def autocast_forward(run: Callable, x: torch.Tensor, precision: str):
    """``run(x) -> (logits, reps)`` under bf16 autocast when ``precision`` is bf16 and ``x`` is on CUDA;
    the representations (and the logits among them) come back in fp32."""
    use_bf16 = precision == "bf16" and x.is_cuda
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
        logits, reps = run(x)
    if use_bf16:
        reps = OrderedDict((k, v.float()) for k, v in reps.items())
        logits = reps["logits"]
    return logits, reps


class GMNLayer(MessagePassing):
    """One edge-and-node update (see the module docstring), runnable dense or through PyG.

    ``aggr`` is ``mean`` or ``sum`` over a neuron's incoming (forward) and outgoing (backward) edges.
    """

    def __init__(self, d: int, aggr: str = "mean"):
        super().__init__(aggr=aggr)
        self.norm_n, self.norm_e = nn.LayerNorm(d), nn.LayerNorm(d)
        self.lin_e = nn.Linear(d, d)
        self.lin_ends = nn.Linear(d, 2 * d, bias=False)  # source and target projections in one matmul
        self.node_h = nn.Linear(d, d)
        self.node_f = nn.Linear(d, d, bias=False)
        self.node_b = nn.Linear(d, d, bias=False)
        self.node_out = nn.Linear(d, d)
        self.edge_out = nn.Linear(d, d)
        self.act = nn.SiLU()
        # Residual branches start at zero: every layer begins as the identity, which keeps deep stacks stable.
        for lin in (self.node_out, self.edge_out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def _node_update(self, h, hn, m_f, m_b):
        return h + self.node_out(self.act(self.node_h(hn) + self.node_f(m_f) + self.node_b(m_b)))

    def forward_dense(self, h: torch.Tensor, e: torch.Tensor, graph: ParamGraph):
        """Dense path: ``h (N, B, d)``, ``e (E, B, d)`` -> updated ``(h, e)``, same shapes.

        Neurons and weights lead, so a layer's nodes and edges are contiguous blocks: the edges of
        ``W_l`` view as ``(out, in, B, d)``, the endpoints broadcast into them and aggregation is a
        reduction over one axis. Elementwise work and matmuls run once on the whole tensors.
        """
        _, b, d = h.shape
        hn = self.norm_n(h)
        ez = self.lin_e(self.norm_e(e))
        s, t = self.lin_ends(hn).chunk(2, -1)
        reduce = torch.mean if self.aggr == "mean" else torch.sum
        no = graph.node_offsets
        zs, fwd, bwd = [], [h.new_zeros(graph.dims[0], b, d)], []
        for k, (ez_k, (o, i)) in enumerate(zip(ez.split(graph.edge_counts), graph.layer_shapes)):
            z = self.act(ez_k.view(o, i, b, d) + s[no[k]:no[k + 1]].unsqueeze(0) + t[no[k + 1]:no[k + 2]].unsqueeze(1))
            zs.append(z.view(o * i, b, d))
            fwd.append(reduce(z, 1))  # into the out-neurons, from their inputs
            bwd.append(reduce(z, 0))  # into the in-neurons, from their outputs
        bwd.append(h.new_zeros(graph.dims[-1], b, d))
        h = self._node_update(h, hn, torch.cat(fwd), torch.cat(bwd))
        e = e + self.edge_out(torch.cat(zs))
        return h, e

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, e: torch.Tensor):
        """PyG path: ``h (n, d)``, ``edge_index (2, m)``, ``e (m, d)`` -> updated ``(h, e)``."""
        n = h.shape[0]
        hn, en = self.norm_n(h), self.norm_e(e)
        s, t = self.lin_ends(hn).chunk(2, -1)
        z = self.edge_updater(edge_index, s=s, t=t, ez=self.lin_e(en))
        m_f = self.propagate(edge_index, z=z, size=(n, n))
        m_b = self.propagate(edge_index.flip(0), z=z, size=(n, n))
        return self._node_update(h, hn, m_f, m_b), e + self.edge_out(z)

    def edge_update(self, s_j, t_i, ez):
        return self.act(ez + s_j + t_i)

    def message(self, z):
        return z


class GMN(nn.Module):
    """``x (B, P)`` flattened weights -> ``(logits (B, classes), {"mp1": ..., "logits": ...})``.

    ``spec``: the zoo's :class:`SirenSpec` (an INR zoo), or any other layout with ``layer_shapes``
    (a CNN zoo's ``CnnSpec``), read as its conv parameter graph with ``canon="none"`` and no probes.

    Representations: ``mp{k}`` the pooled graph after message-passing layer ``k``
    (``(B, groups * d)``), ``head{k}`` the head's hidden layers, ``logits``.
    """

    # Registered buffers (nn.Module.__getattr__ alone would type them Tensor | Module).
    stats: torch.Tensor
    edge_index: torch.Tensor
    node_group: torch.Tensor
    edge_group: torch.Tensor

    def __init__(self, spec: Any, num_classes: int, d: int = 64, depth: int = 4, head_hidden=(256,),
                 dropout: float = 0.0, stats=None, canon: str = "phase", impl: str = "dense", aggr: str = "mean",
                 precision: str = "fp32", compile: str = "none", probes: int = 0):
        super().__init__()
        self.spec, self.impl, self.canon, self.precision = spec, impl, canon, precision
        self.is_inr = isinstance(spec, SirenSpec)
        if not self.is_inr and (canon != "none" or probes):
            raise ValueError(f"canon={canon!r} and probes={probes} are SIREN options; a "
                             f"{type(spec).__name__} network takes canon='none' and probes=0")
        # On CUDA the dense message passing is memory-bound elementwise work between small matmuls:
        # torch.compile fuses it, for training steps only (dynamic batch size, so the last batch reuses
        # it; evaluation is cheap and stays eager). compile=cuda compiles the message-passing stack;
        # cuda-full the whole forward (canonicalisation and head too): 10 % more samples/s, but 40 s more
        # compilation, which pays off only beyond about 250 epochs (benchmarks/results/gmn_throughput.json).
        # cuda-graphs compiles the stack as cuda does and replays it as CUDA graphs (one per batch size):
        # on the small conv graphs of CNN zoos a step is many tiny kernels, bound by their launches.
        self._stack_compiled: Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]] | None = None
        self._forward_compiled: Callable[[torch.Tensor], tuple[torch.Tensor, OrderedDict]] | None = None
        if impl == "dense" and torch.cuda.is_available():
            if compile == "cuda":
                self._stack_compiled = compile_fn(self._dense_stack, dynamic=True)
            elif compile == "cuda-graphs":
                self._stack_compiled = compile_fn(self._dense_stack, dynamic=False, mode="reduce-overhead")
            elif compile == "cuda-full":
                self._forward_compiled = compile_fn(self._forward, dynamic=True)
        self.graph = ParamGraph(tuple(spec.dims)) if self.is_inr else ParamGraph.for_network(spec)
        g = self.graph
        stats = stats or [(0.0, 1.0, 0.0, 1.0)] * len(g.layer_shapes)
        self.register_buffer("stats", torch.tensor(stats, dtype=torch.float32))  # (L, 4)
        # Probe features (Kofinas et al. 2024): every neuron's value at ``probes`` input points, learned
        # and shared by all INRs, joins its bias as node input; they permute with the neurons.
        self.probes = int(probes)
        if self.probes:
            self.probe_coords = nn.Parameter(torch.rand(self.probes, g.dims[0]) * 2 - 1)
        self.node_in = nn.Linear(1 + self.probes, d)
        self.edge_in = nn.Linear(g.edge_dim, d)  # 1 for an INR: the weight
        # Encodings: one per input neuron, one per hidden layer, one per output neuron; one per edge layer.
        self.emb_in = nn.Parameter(torch.randn(g.dims[0], d) * 0.5)
        self.emb_hidden = nn.Parameter(torch.randn(g.num_hidden_layers, d) * 0.5)
        self.emb_out = nn.Parameter(torch.randn(g.dims[-1], d) * 0.5)
        self.emb_edge = nn.Parameter(torch.randn(len(g.layer_shapes), d) * 0.5)
        self.mp = nn.ModuleList(GMNLayer(d, aggr) for _ in range(depth))
        # Batch-normalised readout: pooled vectors share a large INR-independent part (the encodings),
        # so a per-sample LayerNorm left the head near-constant inputs and training sat at chance for
        # hundreds of steps; standardising each feature over the batch exposes the differences at once.
        self.norm_out = nn.BatchNorm1d(g.num_groups * d)
        self.head = Head(g.num_groups * d, head_hidden, num_classes, dropout, act=nn.SiLU)
        # Fixed structure for the PyG path and its pooling.
        self.register_buffer("edge_index", g.edge_index(), persistent=False)
        self.register_buffer("node_group", g.node_group(), persistent=False)
        self.register_buffer("edge_group", g.edge_group(), persistent=False)

    # --- inputs ---------------------------------------------------------------------------------------
    def graph_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, P)`` -> (node values ``(B, N, 1 + probes)``, edge values ``(B, E)``).

        A node's first value is its normalised bias (0 for inputs). With ``canon=phase`` hidden biases
        are canonical phases in ``[0, pi/2]``, fed as ``phase / (pi/4) - 1`` in ``[-1, 1]`` (their range
        is fixed by the symmetry, not the data). Then come its probe values (:meth:`probe_values`).
        """
        params = unflatten(x, self.spec)
        if not self.is_inr:
            return self.conv_graph_values(params)
        if self.canon == "sign":
            params = canonical_signs(params)
        elif self.canon == "phase":
            params = canonical_phases(params, self.spec.w0)
        node_parts = [x.new_zeros(x.shape[0], self.graph.dims[0])]
        edges: list[torch.Tensor] = []
        last = len(params) - 1
        for k, (w, b) in enumerate(params):
            wm, ws, bm, bs = self.stats[k]
            edges.append(((w - wm) / ws).reshape(x.shape[0], -1))
            if self.canon == "phase" and k < last:
                node_parts.append(b * (self.spec.w0 / (math.pi / 4)) - 1.0)
            else:
                node_parts.append((b - bm) / bs)
        nodes = torch.cat(node_parts, 1).unsqueeze(2)
        if self.probes:
            nodes = torch.cat([nodes, self.probe_values(params).to(nodes.dtype)], 2)
        return nodes, torch.cat(edges, 1)

    def conv_graph_values(self, params: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Another network's layers -> (node values ``(B, N, 1)``, edge features ``(B, E, F + 1)``).

        Kernels and biases are normalised per layer (``stats``) before they become features, so the
        zero padding and the kind flag stay as they are.
        """
        normed = [((w - st[0]) / st[1], (b - st[2]) / st[3]) for (w, b), st in zip(params, self.stats)]
        return self.graph.node_features(normed), self.graph.edge_features(normed)

    def probe_values(self, params: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Every neuron's value at the probe points: ``(B, N, probes)``, layer by layer.

        Inputs carry the probe coordinates, hidden neurons their sines, outputs the INR's values there
        (the image at those points). Computed in the weights' precision even under autocast: a bf16
        pre-activation, multiplied by ``w0``, would leave the sines meaningless.
        """
        w0 = params[0][0]
        with torch.autocast(device_type=w0.device.type, enabled=False):
            h = self.probe_coords.to(w0.dtype).unsqueeze(0).expand(w0.shape[0], -1, -1)  # (B, K, in)
            values = [h]
            for k, (w, bias) in enumerate(params):
                h = torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2))  # (B, K, out)
                if k < len(params) - 1:
                    h = torch.sin(self.spec.w0 * h)
                values.append(h)
            return torch.cat(values, 2).transpose(1, 2)

    def node_encoding(self) -> torch.Tensor:
        """``(N, d)``, built by expand and cat (their backward is deterministic, unlike index_add)."""
        g = self.graph
        parts: list[torch.Tensor] = [self.emb_in]
        parts += [self.emb_hidden[k - 1:k].expand(g.dims[k], -1) for k in range(1, g.num_hidden_layers + 1)]
        parts.append(self.emb_out)
        return torch.cat(parts)

    def edge_encoding(self) -> torch.Tensor:
        """``(E, d)``: each edge carries its layer's encoding."""
        return torch.cat([self.emb_edge[k:k + 1].expand(n, -1) for k, n in enumerate(self.graph.edge_counts)])

    # --- dense path -----------------------------------------------------------------------------------
    def embed_dense(self, nodes: torch.Tensor, edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values ``(B, N, F)``, ``(B, E)`` (or ``(B, E, F_e)``) -> features ``(N, B, d)``, ``(E, B, d)``."""
        h = self.node_in(nodes.transpose(0, 1)) + self.node_encoding().unsqueeze(1)
        e_values = edges.t().unsqueeze(-1) if edges.dim() == 2 else edges.transpose(0, 1)
        e = self.edge_in(e_values) + self.edge_encoding().unsqueeze(1)
        return h, e

    def pool_dense(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """``(N, B, d)``, ``(E, B, d)`` -> ``(B, groups * d)`` in group order."""
        g, no = self.graph, self.graph.node_offsets
        parts = [h[:g.dims[0]]]
        parts += [h[no[k]:no[k + 1]].mean(0, keepdim=True) for k in range(1, g.num_hidden_layers + 1)]
        parts.append(h[no[-2]:])
        parts += [x.mean(0, keepdim=True) for x in e.split(g.edge_counts)]
        return torch.cat(parts).transpose(0, 1).flatten(1)

    def _dense_stack(self, nodes: torch.Tensor, edges: torch.Tensor) -> list[torch.Tensor]:
        """Values -> the pooled graph after every message-passing layer."""
        h, e = self.embed_dense(nodes, edges)
        out = []
        for layer in self.mp:
            h, e = cast(GMNLayer, layer).forward_dense(h, e, self.graph)  # self.mp holds GMNLayers
            out.append(self.pool_dense(h, e))
        return out

    # --- PyG path -------------------------------------------------------------------------------------
    def to_batch(self, nodes: torch.Tensor, edges: torch.Tensor) -> Batch:
        """``(B, N, F)``, ``(B, E)`` values -> a PyG ``Batch`` of B parameter graphs (vectorised; equals
        ``Batch.from_data_list`` of the per-INR graphs)."""
        b, n, f = nodes.shape
        m = edges.shape[1]
        offsets = (torch.arange(b, device=nodes.device) * n).repeat_interleave(m)
        ei = self.edge_index.repeat(1, b) + offsets
        batch = Batch(x=nodes.reshape(-1, f), edge_index=ei, edge_attr=edges.reshape(b * m, -1),
                      node_group=self.node_group.repeat(b), edge_group=self.edge_group.repeat(b),
                      batch=torch.arange(b, device=nodes.device).repeat_interleave(n))
        batch._num_graphs = b
        return batch

    def graphs(self, x: torch.Tensor) -> list[Data]:
        """One ``Data`` per network (for users who want the graphs themselves)."""
        nodes, edges = self.graph_values(x)
        return [Data(x=nodes[k], edge_index=self.edge_index, edge_attr=edges[k].reshape(edges.shape[1], -1),
                     node_group=self.node_group, edge_group=self.edge_group) for k in range(x.shape[0])]

    def pool_pyg(self, h: torch.Tensor, e: torch.Tensor, batch: Batch) -> torch.Tensor:
        """PyG path: per-graph, per-group means (``(n, d)``, ``(m, d)`` -> ``(B, groups * d)``)."""
        g, nb = self.graph, batch.num_graphs
        gn, ge = g.num_node_groups, len(g.layer_shapes)
        node_key = batch.batch * gn + batch.node_group
        edge_key = batch.batch[batch.edge_index[0]] * ge + batch.edge_group
        return group_means(h, e, node_key, edge_key, nb, gn, ge)

    # --- forward --------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor):
        compiled = self._forward_compiled
        run = compiled if compiled is not None and x.is_cuda and torch.is_grad_enabled() else self._forward
        return autocast_forward(run, x, self.precision)

    def _forward(self, x: torch.Tensor):
        nodes, edges = self.graph_values(x)
        b = x.shape[0]
        reps = OrderedDict()
        if self.impl == "dense":
            compiled = self._stack_compiled
            stack = compiled if compiled is not None and x.is_cuda and torch.is_grad_enabled() else self._dense_stack
            for k, pooled in enumerate(stack(nodes, edges)):
                reps[f"mp{k + 1}"] = pooled
        else:
            batch = self.to_batch(nodes, edges)
            h = self.node_in(batch.x) + self.node_encoding().repeat(b, 1)
            e = self.edge_in(batch.edge_attr) + self.edge_encoding().repeat(b, 1)
            pooled = self.pool_pyg(h, e, batch)
            for k, layer in enumerate(self.mp):
                h, e = layer(h, batch.edge_index, e)
                pooled = reps[f"mp{k + 1}"] = self.pool_pyg(h, e, batch)
        return self.head(self.norm_out(pooled), reps), reps


class MixedGMN(nn.Module):
    """The GMN on a zoo of mixed architectures: ``x (B, 1 + max_params)`` rows of a :class:`MixedNetworks`
    layout -> ``(logits (B, classes), {"mp1": ..., "logits": ...})``, as :class:`GMN` on the PyG path.

    Readout groups (and node encodings): each input channel, the hidden channels of the first, of the
    middle and of the last layer before the output (one group each, whatever the depth), each output
    neuron; edges one group per layer role. A group a network lacks (a middle layer at depth 2) pools
    to zero. ``stats``: per layout, per layer ``(w_mean, w_std, b_mean, b_std)`` (:func:`role_statistics`).
    """

    def __init__(self, networks: MixedNetworks, num_classes: int, d: int = 64, depth: int = 4,
                 head_hidden=(256,), dropout: float = 0.0, stats=None, aggr: str = "mean", precision: str = "fp32"):
        super().__init__()
        self.networks, self.precision = networks, precision
        self.graphs = [ParamGraph.for_network(spec) for spec in networks.layouts]
        g0 = self.graphs[0]
        for spec, g in zip(networks.layouts, self.graphs):
            if (g.dims[0], g.dims[-1], g.edge_dim) != (g0.dims[0], g0.dims[-1], g0.edge_dim):
                raise ValueError(f"layout {spec} has {g.dims[0]} inputs, {g.dims[-1]} outputs and {g.edge_dim} edge "
                                 f"features; the first has {g0.dims[0]}, {g0.dims[-1]} and {g0.edge_dim}")
        c_in, c_out = g0.dims[0], g0.dims[-1]
        hidden_roles = len(LAYER_ROLES) - 1  # the layers before the output: first, middle, last
        self.num_node_groups, self.num_edge_groups = c_in + hidden_roles + c_out, len(LAYER_ROLES)
        self.node_in = nn.Linear(1, d)
        self.edge_in = nn.Linear(g0.edge_dim, d)
        self.emb_in = nn.Parameter(torch.randn(c_in, d) * 0.5)
        self.emb_hidden = nn.Parameter(torch.randn(hidden_roles, d) * 0.5)
        self.emb_out = nn.Parameter(torch.randn(c_out, d) * 0.5)
        self.emb_edge = nn.Parameter(torch.randn(self.num_edge_groups, d) * 0.5)  # per layer role
        self.mp = nn.ModuleList(GMNLayer(d, aggr) for _ in range(depth))
        width = (self.num_node_groups + self.num_edge_groups) * d
        self.norm_out = nn.BatchNorm1d(width)
        self.head = Head(width, head_hidden, num_classes, dropout, act=nn.SiLU)
        stats = stats or [[(0.0, 1.0, 0.0, 1.0)] * len(g.layer_shapes) for g in self.graphs]
        for k, g in enumerate(self.graphs):
            roles = layer_roles(len(g.layer_shapes))
            hidden = [torch.full((g.dims[j + 1],), c_in + roles[j]) for j in range(len(roles) - 1)]
            self.register_buffer(f"node_group{k}", torch.cat([torch.arange(c_in), *hidden,
                                                               c_in + hidden_roles + torch.arange(c_out)]),
                                 persistent=False)
            self.register_buffer(f"edge_group{k}", torch.cat([torch.full((o * i,), r) for r, (o, i)
                                                               in zip(roles, g.layer_shapes)]), persistent=False)
            self.register_buffer(f"edge_index{k}", g.edge_index(), persistent=False)
            self.register_buffer(f"stats{k}", torch.tensor(stats[k], dtype=torch.float32))  # (L_k, 4)

    def joined_graph(self, x: torch.Tensor):
        """Rows ``(B, 1 + max_params)`` -> one graph of all B networks: node features ``(n, d)``, edge
        features ``(m, d)``, ``edge_index (2, m)``, and every node's and edge's pooling key
        ``row * groups + group``."""
        enc = torch.cat([self.emb_in, self.emb_hidden, self.emb_out])
        hs, es, eis, node_keys, edge_keys, offset = [], [], [], [], [], 0
        for k, rows, p in self.networks.split(x):
            g, bk = self.graphs[k], rows.shape[0]
            ng, eg = getattr(self, f"node_group{k}"), getattr(self, f"edge_group{k}")
            stats = getattr(self, f"stats{k}")
            normed = [((w - st[0]) / st[1], (b - st[2]) / st[3])
                      for (w, b), st in zip(unflatten(p, self.networks.layouts[k]), stats)]
            hs.append(self.node_in(g.node_features(normed).reshape(-1, 1)) + enc[ng].repeat(bk, 1))
            es.append(self.edge_in(g.edge_features(normed).reshape(bk * g.num_edges, -1))
                      + self.emb_edge[eg].repeat(bk, 1))
            starts = offset + torch.arange(bk, device=x.device) * g.num_nodes
            eis.append(getattr(self, f"edge_index{k}").repeat(1, bk) + starts.repeat_interleave(g.num_edges))
            node_keys.append(rows.repeat_interleave(g.num_nodes) * self.num_node_groups + ng.repeat(bk))
            edge_keys.append(rows.repeat_interleave(g.num_edges) * self.num_edge_groups + eg.repeat(bk))
            offset += bk * g.num_nodes
        return (torch.cat(hs), torch.cat(es), torch.cat(eis, 1), torch.cat(node_keys), torch.cat(edge_keys))

    def forward(self, x: torch.Tensor):
        return autocast_forward(self._forward, x, self.precision)

    def _forward(self, x: torch.Tensor):
        h, e, edge_index, node_key, edge_key = self.joined_graph(x)
        reps: OrderedDict = OrderedDict()
        for k, layer in enumerate(self.mp):
            h, e = layer(h, edge_index, e)
            reps[f"mp{k + 1}"] = group_means(h, e, node_key, edge_key, x.shape[0], self.num_node_groups,
                                             self.num_edge_groups)
        return self.head(self.norm_out(reps[f"mp{len(self.mp)}"]), reps), reps


CHOICES = {"impl": ("dense", "pyg"), "weight_norm": ("per-layer", "none"), "canon": ("phase", "sign", "none"),
           "aggr": ("mean", "sum"), "precision": ("fp32", "bf16"),
           "compile": ("none", "cuda", "cuda-graphs", "cuda-full")}


def _check_network(info, config) -> None:
    """A zoo of other networks (``info.inr`` None): its layout must make a parameter graph, and the
    SIREN-only options must be off; one-line errors naming the fix."""
    net = info.network
    layouts = net.layouts if isinstance(net, MixedNetworks) else (net,)
    name = net.__name__ if isinstance(net, type) else type(layouts[0]).__name__
    for layout in layouts:
        try:
            ParamGraph.for_network(layout)
        except (AttributeError, TypeError, ValueError) as err:
            raise WsbenchError(f"gmn cannot build a parameter graph of the {name} networks of dataset "
                               f"{info.dataset!r}: {err}") from None
    for key, off in (("canon", "none"), ("probes", 0), ("augment", "none")):
        if key in config and config[key] != off:
            raise WsbenchError(f"gmn: {key}={config[key]!r} applies to SIREN INRs only; dataset {info.dataset!r} "
                               f"holds {name} networks: use --set {key}={off}")


def build_mixed(info, config) -> MixedGMN:
    """:class:`MixedGMN` for a zoo of mixed architectures (``info.network`` a :class:`MixedNetworks`)."""
    net = info.network
    if config["impl"] != "pyg":
        raise WsbenchError(f"gmn: dataset {info.dataset!r} holds networks of {len(net.layouts)} architectures, whose "
                           f"graphs differ in size; impl={config['impl']!r} needs one shared graph: use --set impl=pyg")
    stats = None
    if config["weight_norm"] == "per-layer":
        if len(info.layout_stats) != len(net.layouts):
            raise WsbenchError("gmn: weight_norm=per-layer on a zoo of mixed architectures needs TaskInfo.layout_stats "
                               "(one entry per layout); pass them or --set weight_norm=none")
        stats = role_statistics(net.layouts, info.layout_stats)
    return MixedGMN(net, info.num_classes, d=int(config["hidden_dim"]), depth=int(config["depth"]),
                    head_hidden=tuple(config["head_hidden"]), dropout=float(config["dropout"]), stats=stats,
                    aggr=config["aggr"], precision=config["precision"])


def build(info, config) -> GMN | MixedGMN:
    for key, known in CHOICES.items():
        if config[key] not in known:
            raise WsbenchError(f"gmn: unknown {key} {config[key]!r}; known: {', '.join(known)}")
    if int(config["depth"]) < 1:
        raise WsbenchError(f"gmn: depth must be at least 1, got {config['depth']}; use --set depth=4")
    if int(config["probes"]) < 0:
        raise WsbenchError(f"gmn: probes must be 0 (off) or more, got {config['probes']}; use --set probes=64")
    if info.inr is None:  # a zoo of other networks (a CNN zoo): read through its conv parameter graph
        _check_network(info, config)
    if isinstance(info.network, MixedNetworks):
        return build_mixed(info, config)
    network = info.inr if info.inr is not None else info.network
    stats = None
    if config["weight_norm"] == "per-layer":
        if info.weight_mean is None or info.weight_std is None:
            raise WsbenchError("gmn: weight_norm=per-layer needs training-split weight statistics in TaskInfo; "
                               "pass them or --set weight_norm=none")
        stats = layer_statistics(network, info.weight_mean, info.weight_std)
    return GMN(network, info.num_classes, d=int(config["hidden_dim"]), depth=int(config["depth"]),
               head_hidden=tuple(config["head_hidden"]), dropout=float(config["dropout"]), stats=stats,
               canon=config["canon"], impl=config["impl"], aggr=config["aggr"], precision=config["precision"],
               compile=config["compile"], probes=int(config["probes"]))


# Tuned on the full MNIST zoo (H100, 6-epoch probes: sum beat mean aggregation, lr 3e-3 beat 1e-3,
# width 128 beat 64, phase canonicalisation beat sign-only). Test accuracy over 5 seeds (the yeom2025
# study): MNIST 95.2 +- 0.1 %, FMNIST 81.9 +- 0.4 %, CIFAR-10 42.9 +- 0.6 %. Batch 512: a step costs about
# the same wall time as at 128 (kernel launches dominate). precision and compile act on CUDA only (CPU
# runs are fp32 and eager): bf16 autocast plus the compiled message passing train at 30,100 samples/s
# on an H100 against 12,900 in fp32 eager (benchmarks/results/gmn_throughput.json); compilation costs
# about a minute once per process.
DEFAULTS = {
    "hidden_dim": 128, "depth": 4, "head_hidden": [256], "dropout": 0.1, "aggr": "sum",
    "weight_norm": "per-layer", "canon": "phase", "impl": "dense", "precision": "bf16", "compile": "cuda", "probes": 0,
    "epochs": 30, "batch_size": 512, "lr": 3e-3, "weight_decay": 1e-2, "warmup_epochs": 1, "grad_clip": 1.0,
}

# On zoos of conv networks: no canonical form, probes or affine augmentation (they are SIREN symmetries).
CNN_ZOO_DEFAULTS = {"canon": "none", "probes": 0, "hidden_dim": 32, "depth": 2, "head_hidden": [64],
                    "epochs": 20, "batch_size": 64, "bn_recalibrate": 512}
# Zoos of mixed architectures: graphs of different sizes, batched through PyG (MixedGMN).
MIXED_CNN_ZOO_DEFAULTS = {**CNN_ZOO_DEFAULTS, "impl": "pyg"}

# Types and ranges of the GMN's own keys, checked before any work (the training keys are the harness's).
PARAMS = {
    "hidden_dim": Param(int, ge=1, help="node and edge feature width"),
    "depth": Param(int, ge=1, help="number of message-passing layers"),
    "probes": Param(int, ge=0, help="learned probe points per neuron; 0: off"),
    "head_hidden": Param(list, item=int, help="hidden widths of the classifier head"),
    **{key: Param(str, choices=known) for key, known in CHOICES.items()},
}


@hookimpl
def register_architectures(register):
    register(ArchitectureSpec(
        name="gmn", view="weights", build=build,
        description="Graph metanetwork: message passing over each network's parameter graph (node per neuron "
                    "or channel, edge per weight or kernel)",
        defaults=DEFAULTS, params=PARAMS, mixed_networks=True,
        dataset_defaults={
            # On the shared-init zoos the GMN fits the training set (loss 0.01 by epoch 30) and overfits:
            # label smoothing and more dropout gave 95.1 % on MNIST against 94.4 % (H100, seed 0).
            # Probe features and affine weight-space augmentation then lift MNIST from 94.95 % to
            # 97.04 % (probes), 95.20 % (affine), 98.24 % (both), seed 0; both over 3 seeds: MNIST
            # 98.23 +- 0.02 %, FMNIST 85.84 +- 0.33 % (H200; benchmarks/results/gmn_accuracy_h200.json).
            # On 2,000 MNIST INRs on CPU (seed 0) they take the GMN from 56.8 % to 87.7 %, past flat-mlp's 79.9 %.
            "mnist": {"epochs": 30, "dropout": 0.2, "label_smoothing": 0.1, "probes": 64, "augment": "affine"},
            "fmnist": {"epochs": 30, "dropout": 0.2, "label_smoothing": 0.1, "probes": 64, "augment": "affine"},
            # Three output channels triple the output neurons; the zoo is smaller per class signal.
            "cifar10": {"epochs": 30, "dropout": 0.2},
            # The quick study on 2 CPU cores: a narrow, shallow GMN (about 1,000 training samples/s there
            # against 15 at the defaults) with probe features and affine augmentation, which the 1,000
            # training INRs need (small shapes at random places and angles). BatchNorm statistics from 512
            # training INRs instead of all 1,000 (their forward pass was a quarter of an epoch's time).
            # 15 epochs: 48.8 % over seeds 0-2 on 6 classes (20 epochs with all 1,000: 47.6 %).
            "shapes": {"hidden_dim": 32, "depth": 2, "head_hidden": [64], "probes": 16, "augment": "affine",
                       "label_smoothing": 0.1, "epochs": 15, "batch_size": 64, "bn_recalibrate": 512},
            # CNN zoos: the conv parameter graph (59 nodes, 688 edges of 9 kernel values for the Small CNN
            # Zoo network); the SIREN options off; a narrow, shallow GMN, small enough for 2 CPU cores.
            **{name: CNN_ZOO_DEFAULTS for name in ("cnn-mnist", "cnn-fmnist", "cnn-cifar10gs", "cnn-imported")},
            **{f"{name}-mixed": MIXED_CNN_ZOO_DEFAULTS for name in ("cnn-mnist", "cnn-fmnist", "cnn-cifar10gs")},
        },
    ))
