"""Compiling a jitted function ahead of its first use, in a background thread.

A function that runs rarely but compiles slowly (the reset: it traces the workload's init
and the strategy over every leaf, as long to compile as the training step or longer) is
lowered and compiled for abstract arguments while other work goes on; its first call then
waits only for what is left of the compilation. Nothing here knows what is compiled.

A compilation is specialised to the shapes, dtypes and weak types of its arguments
(`signature`); a call with other arguments gets None and runs the jitted function, which
compiles for them.
"""

import time
from concurrent import futures

import jax
import numpy as np
from absl import logging


def signature(tree):
    """(tree structure, abstract leaves): the shapes, dtypes and weak types of a tree of
    arrays, what a compiled function is specialised to."""

    def abstract(x):
        weak = bool(getattr(getattr(x, "aval", None), "weak_type", False))
        dtype = x.dtype if hasattr(x, "dtype") else np.result_type(x)
        return jax.ShapeDtypeStruct(np.shape(x), dtype, weak_type=weak)

    leaves, structure = jax.tree.flatten(tree)
    return structure, tuple(abstract(x) for x in leaves)


class CompileAhead:
    """One function compiled ahead, for one signature (a cache: rebuilt with its owner).

    `reraise`: exception types the compilation may raise that the caller handles itself
    (they are raised again by `compiled_for`); any other failure is logged once and the
    caller's plain jitted call decides.
    """

    def __init__(self, name: str = "function", reraise: tuple[type[BaseException], ...] = ()):
        self.name = name
        self.reraise = reraise
        self.signature = None
        self.future = None
        self.failed = False
        self.seconds = None  # Tracing, lowering and compiling, in the background thread.

    def start(self, jitted, args) -> None:
        """Lowers and compiles `jitted` for the abstract `args` in a background thread."""
        self.signature = signature(args)
        abstract_args = jax.tree.unflatten(*self.signature)

        def compile_now():
            began = time.perf_counter()
            compiled = jitted.lower(*abstract_args).compile()
            self.seconds = time.perf_counter() - began
            logging.info("the %s compiled ahead, in %.1f s", self.name, self.seconds)
            return compiled

        executor = futures.ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-compile")
        self.future = executor.submit(compile_now)
        executor.shutdown(wait=False)  # The thread ends with the compilation.

    def compiled_for(self, args):
        """The compiled function, waiting for it, if it was compiled for `args`'
        signature; None if none was started, the signature differs or the compilation
        failed (logged once; the jitted call then tells)."""
        if self.future is None or self.failed:
            return None
        try:
            compiled = self.future.result()
        except self.reraise:
            raise
        except Exception as error:  # noqa: BLE001 -- any failure: the plain call decides.
            self.failed = True
            logging.warning("the %s compiled ahead failed (%s); compiling it now", self.name, error)
            return None
        return compiled if signature(args) == self.signature else None
