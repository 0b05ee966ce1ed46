"""The hooks a wsbench plugin implements, and the behaviour the harness expects of what they register.

A plugin is a module (or any object) with functions of these names marked ``@hookimpl``
(``from wsbench import hookimpl``). The built-ins in ``wsbench_plugins`` are registered first,
then every module of the ``wsbench`` entry-point group, one at a time: a plugin that fails to
import or register costs a one-line warning naming its distribution (an error under ``--strict``
or ``WSBENCH_STRICT=1``) and the others still load. Each hook is called once per plugin, when the
registry is first loaded (once per process, before any command runs), with a ``register``
callback; the plugin calls it once per spec it provides. Hooks return nothing. The host fills in
every spec's ``distribution`` and ``version``; a name registered twice is an error that names both
providers.

Every object a hook sees lives in :mod:`wsbench.specs` and is importable from ``wsbench``.
"""
import pluggy

hookspec = pluggy.HookspecMarker("wsbench")
hookimpl = pluggy.HookimplMarker("wsbench")


@hookspec
def register_architectures(register):
    """Register architectures: call ``register(ArchitectureSpec(...))`` for each one.

    :param register: takes one :class:`~wsbench.specs.ArchitectureSpec`; anything else is a
        ``TypeError`` reported as a warning naming the plugin.
    :return: nothing.

    When called: once, while the registry loads. ``spec.build(info, config)`` is called later,
    once per training run (and by ``wsbench plugins check``), after the harness seeds torch with
    the run's seed, so the model's initial weights follow from the seed.

    What the harness expects of the model ``build`` returns (a ``torch.nn.Module``):

    - ``forward(x)`` returns ``(logits, layers)``: ``logits`` ``(B, info.num_classes)``, trained
      with cross-entropy; ``layers`` an ``OrderedDict`` of name -> ``(B, d)`` tensors, the named
      representations that similarity metrics compare, in the model's order (the built-ins end
      with ``"logits"``). Names and widths must not depend on the batch.
    - ``x`` is the view the spec names, float32, on the training device:

      * ``"weights"``: ``(B, P)`` raw flat INR weights in the layout of :mod:`wsbench.weights`
        (``P = info.inr.num_params``; per layer ``W (out, in)`` row-major then ``b (out,)``),
        NOT normalised: standardise them with ``info.weight_mean``/``info.weight_std``
        (training-split statistics, ``(P,)``), per coordinate or per layer
        (``wsbench.layer_statistics``); unnormalised SIREN weights leave a model at chance.
      * ``"images"``: ``(B, C, H, W)`` pixels in ``[0, 1]`` standardised per channel with the
        training split's ``info.image_mean``/``info.image_std``.
      * ``"function"`` (zoos of networks): ``(B, *info.function_shape)``, each network's outputs
        on the zoo's probe inputs; ``info.function_mean``/``info.function_std`` standardise them.

      On a zoo of networks ``info.network`` is the weight layout (``info.inr`` only when it is a
      ``SirenSpec``)
      (``wsbench.tensor_shapes``/``wsbench.unflatten`` read it); with ``info.target == "scalar"``
      ``logits`` is ``(B, 1)``: the predicted value, trained with MSE on the standardised target.
      On a zoo whose networks differ in architecture ``info.network`` is a ``wsbench.MixedNetworks``
      (a row: its layout's index in ``info.network.layouts``, then its padded parameters;
      ``info.network.split(x)`` per layout; ``info.layout_stats`` the training statistics per
      layout); only specs with ``mixed_networks=True`` are run there.

    - Deterministic: the same seed, config and device give the same numbers. Draw randomness from
      torch's global generator (the harness seeds it) or from generators seeded from it, never
      from time or unseeded sources.
    - ``config`` is the resolved flat dict: the training defaults, then ``spec.defaults``, then
      ``spec.dataset_defaults[info.dataset]``, then the user's ``--set key=value``. Defaults are
      plain values (numbers, strings, booleans, lists of them): they are hashed into the run id,
      stored with every run and overridable from the command line.
    - Every config value is typed and checked before any zoo or training work, so ``build`` sees
      values of the right type and range: ``spec.params`` (key -> :class:`~wsbench.specs.Param`,
      e.g. ``Param(int, ge=1)``, ``Param(str, choices=("sum", "mean"))``) declares a key's type and
      range; the harness declares the training keys (``wsbench.config.COMMON_PARAMS``: ``epochs``,
      ``batch_size``, ``lr``, ``dropout``, ``grad_clip``, ...); any other key is typed by its default.
      A value that does not fit is an error naming the key, the value, the expected type or range
      and the architecture.

    ``wsbench plugins check NAME`` runs these expectations against a registered architecture.
    """


@hookspec
def register_datasets(register):
    """Register datasets: call ``register(DatasetSpec(...))`` for each one.

    :param register: takes one :class:`~wsbench.specs.DatasetSpec`.
    :return: nothing.

    When called: once, while the registry loads. ``spec.load(data_dir)`` is called later, when a
    command needs the dataset's task (``run``, ``grid``, ``inrs build``), with a
    :class:`pathlib.Path` (``--data-dir``, ``WSBENCH_DATA``, or ``data`` in the user cache).

    ``load`` returns :class:`~wsbench.specs.ImageData`: the official train and test images,
    ``(N, C, H, W)`` uint8, labels ``(N,)`` int64 in ``0 .. len(classes) - 1``, the class names
    and optional checksums of the source files. It reads files under ``data_dir`` or downloads
    them there (``wsbench.ensure`` fetches from mirrors and checks MD5s), and returns the same
    arrays on every call: the harness keys the cached INR zoo by a hash of them. Errors a user can
    fix are :class:`~wsbench.errors.WsbenchError` with a message that says what to do.

    The harness then holds out ``spec.num_val`` training images as validation (seeded by
    ``spec.split_seed``), fits one SIREN ``2 -> spec.inr_hidden... -> C`` per image with
    ``wsbench.inr.DEFAULT_RECIPE`` updated by ``spec.inr_recipe`` (keys ``steps``, ``lr``, ``w0``,
    ``decay_frac``, ``lr_final``, ``init``, ``psnr_target``, ``chunk_size``, ``optimizer``) and
    caches the zoo, so every architecture sees the same samples through both views.

    A dataset whose samples are trained networks sets ``spec.networks`` instead:
    ``networks(request: ZooRequest) -> NetworkZoo`` builds or opens its zoo (with
    ``request.recipe``, the spec's ``zoo_recipes`` for the device type overridden by ``--recipe``)
    and returns its ids, targets, splits and views; ``spec.target`` (``"class"`` or ``"scalar"``)
    and ``spec.views`` say what the zoo holds, ``spec.mixed_networks`` whether its networks differ
    in architecture (``NetworkZoo.network`` then a ``wsbench.MixedNetworks``). See
    :class:`~wsbench.specs.NetworkZoo`.
    """


@hookspec
def register_metrics(register):
    """Register similarity metrics: call ``register(MetricSpec(...))`` for each one.

    :param register: takes one :class:`~wsbench.specs.MetricSpec`.
    :return: nothing.

    When called: once, while the registry loads. ``wsbench similarity --metric NAME`` then compares
    every pair of stored runs of a dataset, layer by layer, and ``wsbench leaderboard --metric
    NAME`` ranks by the result.

    ``spec.fn(x, y)`` gets two float64 torch tensors ``(n, d1)`` and ``(n, d2)`` whose rows are the
    same samples and returns a Python float (NaN where the value is undefined); it must be
    deterministic. That alone is a complete metric: the harness computes the value, a 95 % interval
    over samples (``--resamples``, 1,000 by default: half-samples without replacement unless
    ``spec.interval`` declares otherwise, see :data:`~wsbench.specs.CI_KINDS`), a permutation
    null (``--permutations``, 100 by default) and the null-calibrated value by calling ``fn`` once
    per layer pair for each, so its cost is about 1,100 calls per layer pair. A constant or
    non-finite representation never reaches ``fn``: its rows are NaN with a ``reason``.
    ``spec.batched`` is the optional fast path for all pairs at once (see
    :class:`~wsbench.specs.BatchRequest`); it must agree with ``fn``.

    ``spec.range`` (optional, ``(low, high)``) is the values the metric can take: leaderboards clip
    the seed-level intervals they show to it.

    ``spec.invariances`` are optional claims (``"orthogonal"``, ``"isotropic-scaling"``,
    ``"translation"``) that every similarity job checks on ``fn``, with self-similarity (1 for a
    representation with itself); a failed check is stored on the rows (``checks_passed``).
    """
