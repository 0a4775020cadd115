"""Remote execution on a Ray cluster: export actions run on other machines, as Bazel's do.

Chosen by `executor = "ray"`; nothing here imports `ray` until a build has an
action to run, so a no-op build, `doit list` or a local build never pays for
it. The parts, client first:

- executor.py (client): connects once per build, sends each action as a Ray
  task and waits; anything that goes wrong becomes one warning and a local
  build of that action.
- outputs.py (client): the returned files, each re-hashed as it is written
  where a local worker would have written it.
- blobs.py (client): every input blob is put into Ray's object store once per
  build, however many actions use it.
- wire.py: the unit that travels (the job's wire form, the input manifest
  {path: sha256}, the key's toolchain section, the resources) and the node's
  report; the toolchain comparison both sides agree on.
- node.py (on a node): the task body. It refuses an action whose toolchain
  differs from the node's, materialises exactly the declared inputs in a
  fresh folder (by digest, verified), runs the job there in the node's warm
  export server and returns the outputs with their digests.
- keeper.py (on a node): one long-lived actor per node, backend and runtime
  environment. It keeps the node's export server (rules.execution.server: the
  backend imported once, a fresh fork per job) and knows the node's
  toolchain fingerprint. (A task that holds GPUs runs its job in a fresh
  worker process instead, which sees the devices Ray gave it.)
- config.py: the settings' typed value and the mapping of a target's
  `resources` to Ray's scheduling options.

Why tasks that call into a per-node actor, and not the actor alone: a task
carries the target's resources (CPUs, GPUs, memory, custom resources), so
Ray's scheduler places it, Ray retries it elsewhere when its node dies
(max_retries, system failures only; a user error is a result, not an
exception, and is never retried) and ray.cancel ends it on Ctrl-C. The actor
reserves nothing (num_cpus=0); it only keeps the warm process, which the task
on the same node reaches over a Unix socket. Forking the actor itself would
be unsafe: it runs gRPC threads.
"""
