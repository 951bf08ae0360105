"""Where a run's trials execute: the executor seam.

An executor takes the pending trials of a run and yields each (spec, result) as it
finishes, by then with its trial folder in the run folder. A trial stays the function of
(task, agent spec, index) that harness.trial.run_trial is; an executor only decides where
it runs. Two exist, chosen by name through harness.api.get_executor (which imports Ray
lazily, so a missing optional dependency is an install hint, not an import crash; and this
module, below harness/ray_exec.py, never imports it):

- local: a thread pool on this machine, `concurrency` trials at once;
- ray:   a Ray cluster (harness/ray_exec.py, the `ray` extra), placed by each task's
  resources.

If the consumer stops (KeyboardInterrupt, an exception, closing the generator), the
executor cancels what is left and lets no trial run on.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

from .cores import CorePool
from .trial import Cancelled, TrialSpec, run_trial

if TYPE_CHECKING:
    from results.records import RunConfig, TrialResult

EXECUTORS = ("local", "ray")
RAY_HINT = "--executor ray needs Ray, an optional extra: pip install -e '.[ray]' (or pip install 'ray>=2.9')"


class ExecutorError(Exception):
    """An executor that cannot start (Ray missing, no cluster at the address, a node refused)."""


class Executor(Protocol):
    def trials(self, config: "RunConfig", todo: list[TrialSpec], images: dict[str, str],
               on_start: Callable[[TrialSpec], None]) -> Iterator[tuple[TrialSpec, "TrialResult"]]:
        """Run `todo`; yield each (spec, result) as it finishes, its folder at spec.out_dir."""


class LocalExecutor:
    """A thread pool on this machine, `config.concurrency` trials at once; timing phases
    hold their cores through `cores`."""

    def __init__(self, cores: CorePool | None = None):
        self.cores = cores or CorePool()

    def trials(self, config, todo, images, on_start):
        cancel = threading.Event()
        pool = ThreadPoolExecutor(max_workers=max(1, config.concurrency), thread_name_prefix="trial")

        def one(spec: TrialSpec):
            if cancel.is_set():
                raise Cancelled()
            on_start(spec)
            return run_trial(spec, image=images[spec.task.name], cores=self.cores, backend=config.backend,
                             cancel=cancel)

        futures = {pool.submit(one, s): s for s in todo}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for f in done:
                    try:
                        r = f.result()
                    except Cancelled:
                        continue
                    yield futures[f], r
        except BaseException:  # GeneratorExit included: the consumer stopped
            cancel.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
