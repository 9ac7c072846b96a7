"""What runs inside a python-tool process: the loop that takes one job at a time from the
parent, runs the step's code, and sends back its outcome.

A job's code sees as globals every input key by name, `input_data` (a copy of the input, unless
the input has a key literally named `input_data`, whose value then wins), `args` (the input map),
`context` and `variables` (a shallow copy of the render context), `execution_id`, `step`, and
the modules named in `libs`. The step's value is, in this order: the value of a top-level
`return` (the code then runs as the body of a function whose names are declared `global`); the
global `result`; the return value of a callable `main`, called with keyword arguments bound by
parameter name from the input (an `async def main` runs with `asyncio.run`). The value is made
JSON-safe with `to_jsonable`. `print` output goes to the job's bounded buffers.

The process runs under an address-space limit (RLIMIT_AS, set before the first job, hard and
soft alike so step code cannot lift it), its standard output and error point at /dev/null (a
write to file descriptor 1 cannot reach the parent's terminal), and it is replaced when it dies,
times out or is cancelled (`noetl.tools.pyprocess`).
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import io
import os
import pickle
import resource
import sys
import traceback
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any, NamedTuple

from noetl.tools import failure
from noetl.tools.jsonsafe import to_jsonable
from noetl.tools.pychannel import receive_message, send_message
from noetl.tools.pycompile import STEP_FUNC, Compiled, compile_source
from noetl.tools.pylibs import LibError, Libs, load_libs, missing_module_message
from noetl.tools.pyoutput import BoundedText

# `__name__` of step code: not "__main__", so `if __name__ == "__main__":` blocks do not run.
MODULE_NAME = "__noetl_python__"
# Jobs and outcomes cross the channel as pickles of plain tuples: multiprocessing's own `send`
# builds a pickler with a copy of the reducer table for every message, and a pickled class
# instance costs about three times a tuple of its fields (nothing here carries a handle).
PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL


class Job(NamedTuple):
    source: str
    inputs: dict[str, Any]
    input_value: Any  # what `input_data`/`args` are when the input is not a map
    context: dict[str, Any]
    libs: Any
    execution_id: int
    step: str


class Outcome(NamedTuple):
    status: str  # success | error | timeout
    data: Any = None
    error: str | None = None
    kind: str | None = None  # failure kind (noetl.tools.failure) when status is not success
    stdout: str = ""
    stderr: str = ""


def dump_job(job: Job) -> bytes:
    return pickle.dumps(tuple(job), PICKLE_PROTOCOL)


def load_job(data: bytes) -> Job:
    return Job._make(pickle.loads(data))


def dump_outcome(outcome: Outcome) -> bytes:
    """The outcome's bytes; a value pickle cannot take (to_jsonable should prevent it) becomes
    an error outcome naming why."""
    try:
        return pickle.dumps(tuple(outcome), PICKLE_PROTOCOL)
    except Exception as exc:
        text = f"the step's result cannot be sent: {exc}"
        return pickle.dumps(tuple(Outcome("error", error=text, kind=failure.TOOL)), PICKLE_PROTOCOL)


def load_outcome(data: bytes) -> Outcome:
    return Outcome._make(pickle.loads(data))


def serve(conn: Connection, memory_bytes: int | None) -> None:
    """The process's main loop: one job in, its outcome out, until the parent hangs up."""
    os.setsid()  # its own process group: killing the group takes what step code started too
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    _silence_descriptors()
    sys.modules.setdefault(MODULE_NAME, ModuleType(MODULE_NAME, "Namespace of code run by the python tool"))
    while True:
        try:
            job = load_job(receive_message(conn))
        except (EOFError, OSError):
            return
        answer = dump_outcome(run(job, memory_bytes))
        try:
            send_message(conn, answer)
        except (OSError, ValueError):
            return


def _silence_descriptors() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


class _Capture(io.TextIOBase):
    """`sys.stdout`/`sys.stderr` while a job runs: text goes to a bounded buffer."""

    def __init__(self) -> None:
        self.buffer_text = BoundedText()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return self.buffer_text.write(text)


def run(job: Job, memory_bytes: int | None = None) -> Outcome:
    """Run one job with its output captured."""
    out, err = _Capture(), _Capture()
    real_out, real_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        outcome = _execute(job, memory_bytes)
    finally:
        sys.stdout, sys.stderr = real_out, real_err
    if out.buffer_text.empty and err.buffer_text.empty:
        return outcome
    return outcome._replace(stdout=out.buffer_text.getvalue(), stderr=err.buffer_text.getvalue())


def _execute(job: Job, memory_bytes: int | None) -> Outcome:
    compiled: Compiled | None = None
    libs = Libs()
    try:
        compiled = compile_source(job.source)
        libs = load_libs(job.libs)
        glb = _globals(job, libs)
        exec(compiled.code, glb)
        result: Any = None
        if compiled.wrapped:
            result = glb.pop(STEP_FUNC)()
        if result is None:
            result = glb.get("result")
            if "result" in job.inputs and result is job.inputs["result"]:
                result = None  # an input named `result` the code never set
        if result is None:
            main = glb.get("main")
            if callable(main):
                result = _call_main(main, job)
        return Outcome("success", to_jsonable(result))
    except MemoryError:
        limit = f"{memory_bytes // (1024 * 1024)} MB" if memory_bytes else "the machine's"
        text = f"MemoryError: the step ran out of memory (its limit is {limit}; raise it with spec.max_memory_mb)"
        return Outcome("error", error=text, kind=failure.TOOL)
    except LibError as exc:
        return Outcome("error", error=str(exc), kind=failure.TOOL)
    except ModuleNotFoundError as exc:
        hint = missing_module_message(exc, libs.missing)
        text = _describe(exc, compiled)
        return Outcome("error", error=f"{hint}\n{text}" if hint else text, kind=failure.TOOL)
    except BaseException as exc:
        return Outcome("error", error=_describe(exc, compiled), kind=failure.classify_exception(exc))


def _globals(job: Job, libs: Libs) -> dict[str, Any]:
    glb: dict[str, Any] = {
        "__builtins__": builtins,
        "__name__": MODULE_NAME,
        "context": job.context,
        "variables": job.context,
        "args": job.input_value,
        "execution_id": job.execution_id,
        "step": job.step,
    }
    glb.update(job.inputs)
    if "input_data" not in job.inputs:
        glb["input_data"] = dict(job.inputs) if isinstance(job.input_value, Mapping) else job.input_value
    glb.update(libs.bindings)
    return glb


def _call_main(main: Callable[..., Any], job: Job) -> Any:
    positional: list[Any] = []
    kwargs: dict[str, Any] = {}
    try:
        params = list(inspect.signature(main).parameters.values())
    except (TypeError, ValueError):
        params = []
    specials: dict[str, Any] = {
        "input_data": job.input_value,
        "args": job.input_value,
        "context": job.context,
    }
    positional_only: set[str] = set()
    for param in params:
        if param.kind is param.VAR_POSITIONAL:
            continue
        if param.kind is param.VAR_KEYWORD:
            for key, value in job.inputs.items():
                if key not in positional_only:
                    kwargs.setdefault(key, value)
            continue
        if param.name in job.inputs:
            value = job.inputs[param.name]
        elif param.name in specials:
            value = specials[param.name]
        else:
            continue  # a default applies, or the call fails naming the missing argument
        if param.kind is param.POSITIONAL_ONLY:
            positional_only.add(param.name)
            if len(positional) == params.index(param):
                positional.append(value)
        else:
            kwargs[param.name] = value
    result = main(*positional, **kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _describe(exc: BaseException, compiled: Compiled | None) -> str:
    message = str(exc)
    if isinstance(exc, SyntaxError):
        text = f"SyntaxError: {exc.msg}"
        if exc.lineno:
            text += f" (line {exc.lineno})"
        if exc.text and exc.text.strip():
            text += f"\n    {exc.text.strip()}"
        return text
    head = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if compiled is None:
        return head
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == compiled.filename]
    where: list[str] = []
    for frame in frames[-3:]:
        lineno = frame.lineno or 0
        name = "<module>" if frame.name == STEP_FUNC else frame.name
        text = compiled.lines[lineno - 1].strip() if 0 < lineno <= len(compiled.lines) else ""
        where.append(f"  at line {lineno}, in {name}: {text}" if text else f"  at line {lineno}, in {name}")
    return "\n".join([head, *where])
